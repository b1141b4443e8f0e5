"""The course's offline OpenAI-compatible server (Chat Completions and Responses, streamed,
with faults on request) and how an app picks it or a real provider.

Import names from here; the modules are the server's inside. Imports ``streams`` and ``runtime``.
"""

from course_app._exports import lazy_exports

EXPORTS = {
    "app": ["create_app"],
    "faults": ["FAULTS"],
    "script": ["StreamStats", "reply_to", "tokenize"],
    "settings": [
        "FAKE_API_KEY",
        "FAKE_MODEL",
        "AppLLM",
        "LLMSettings",
        "async_client",
        "llm_settings",
        "open_llm",
    ],
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, EXPORTS)
