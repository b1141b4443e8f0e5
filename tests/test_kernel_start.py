"""tests/plugins/kernel_start.py: one more start for a kernel that died while starting."""

from __future__ import annotations

from typing import Any

import pytest

from tests.plugins import kernel_start


def starts(failures: int, calls: list[Any]) -> Any:
    def start(*args: Any, stderr: Any, **kwargs: Any) -> str:
        calls.append(kwargs)
        if len(calls) <= failures:
            stderr.write("zmq.error.ZMQError: Address already in use\n")
            stderr.flush()
            raise RuntimeError("Kernel died before replying to kernel_info")
        return "kernel"

    return start


def test_a_kernel_that_dies_once_is_started_again_and_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(kernel_start, "_start_new_kernel", starts(1, calls))
    assert kernel_start.start_new_kernel(kernel_name="k", stderr=None) == "kernel"
    assert len(calls) == 2
    assert "Address already in use" in capsys.readouterr().err


def test_a_kernel_that_dies_twice_fails_with_what_it_wrote(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(kernel_start, "_start_new_kernel", starts(2, calls))
    with pytest.raises(RuntimeError, match=r"(?s)twice.*Address already in use"):
        kernel_start.start_new_kernel(kernel_name="k", stderr=None)
    assert len(calls) == 2
