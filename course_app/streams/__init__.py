"""Building blocks the lessons teach and then reuse: the event log and the hub (replay and
fan-out), request guards and cleanup, the AI SDK's UI message stream, the capstone's answer store.

Import names from here; ``ui_message_stream`` is imported as a module (``... import
ui_message_stream as ui``). This room imports ``services`` and ``runtime`` only.
"""

from course_app._exports import lazy_exports

EXPORTS = {
    "event_log": ["EventLog", "EventsLost", "LoggedEvent"],
    "hub": ["Hub", "Message", "MissedEvents"],
    "request_cleanup": ["RequestCleanup", "request_exit_stack"],
    "request_guards": ["BodyRefused", "guard_requests", "read_json"],
    "quiet_disconnects": ["QuietDisconnectRoute"],
    "shutdown": ["close_at_shutdown", "shutdown_requested"],
    "stream_timing": ["StreamRecord", "StreamTiming"],
    "answer_streams": [
        "INTERNAL",
        "INTERRUPTED",
        "SHUT_DOWN",
        "STOPPED",
        "TRIMMED",
        "AnswerInProgress",
        "AnswerStream",
        "LeanEventSourceResponse",
        "RedisAnswerStore",
        "StoreBusy",
        "StoreUnavailable",
    ],
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, EXPORTS)
