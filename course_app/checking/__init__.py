"""The learner's loop: run an exercise's tests, report each in plain words with a hint,
load the learner's (or the reference) module, and the pytest helpers lessons use.

Lessons import ``check``, ``load_exercise``, ``live_server`` and ``run_pytest`` from here; the
rest is the ``course`` command's. Only this room knows the test report's format.
"""

from course_app._exports import lazy_exports

EXPORTS = {
    "checker": ["CheckResult", "check", "hint", "progress", "run_check"],
    "exercise_loader": ["EXERCISES_DIR_ENV", "TARGET_ENV", "ExerciseImportError", "load_exercise"],
    "manifest": ["Lesson", "UnknownLessonError", "find_lesson", "load_lessons"],
    "stubs": ["StubMarkerError", "make_stub", "stub_for", "write_stubs"],
    "notebook_tests": ["run_in_notebook", "run_pytest"],
    "pytest_fixtures": [
        "PluggedApp",
        "SharedServer",
        "live_server",
        "loopback_client",
        "shared_server",
    ],
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, EXPORTS)
