"""What every lesson cell uses: the in-process lesson server, the pace, the wire inspector,
arrival plots, the lesson pages and the browser.

A lesson, an exercise or a test imports any name below from here (``from course_app.runtime
import serve``); ``pace`` is imported as the module (``from course_app.runtime import pace``).
This room imports no other room.
"""

from course_app._exports import lazy_exports

EXPORTS = {
    "server": ["LessonServer", "LessonServerError", "running_servers", "serve"],
    "pace": ["get_pace", "set_pace"],
    "inspector": ["INTERESTING_HEADERS", "Frame", "inspect_app", "inspect_stream", "split_frames"],
    "timeline": ["plot_arrivals"],
    "pages": ["html_page"],
    "paths": ["course_root"],
    "logs": ["logbook", "show_lesson_logs"],
    "browser": [
        "CHROMIUM_ARGS",
        "CHROMIUM_HINT",
        "chromium_path",
        "close_chromium",
        "open_chromium",
    ],
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, EXPORTS)
