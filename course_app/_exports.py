"""Lazy re-exports for the rooms' ``__init__`` files: a name is imported on first use.

A room's public names live in its small modules. Importing a room must not import them all
(uvicorn, matplotlib, Playwright, the openai SDK ...): ``course check`` and each lesson pay
only for the modules they use.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_exports(
    package: str, exports: dict[str, list[str]]
) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for a room that re-exports ``exports``.

    ``exports`` maps a module of the room to the public names it defines.
    """
    owner = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> object:
        module = owner.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(owner)

    return __getattr__, __dir__, sorted(owner)
