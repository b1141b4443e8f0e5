"""The ``course`` command: list, check, progress, hint, reset, serve, lab, verify.

Every failure a learner can cause (a wrong lesson number, a port in use, an exercise that
does not import) ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from course_app.checking import (
    ExerciseImportError,
    Lesson,
    UnknownLessonError,
    find_lesson,
    load_exercise,
    load_lessons,
    progress,
    run_check,
    stub_for,
)
from course_app.runtime import course_root, show_lesson_logs


class CommandError(Exception):
    """A learner-facing failure: printed as one line, exit status 2."""


def _cmd_list(args: argparse.Namespace) -> int:
    lessons = load_lessons()
    width = max(len(lesson.title) for lesson in lessons)
    for lesson in lessons:
        where = lesson.path("notebook").relative_to(course_root())
        print(f"{lesson.number}  {lesson.title:<{width}} {lesson.minutes:>3} min  {where}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    result = run_check(args.lesson, "solutions" if args.solutions else "exercises")
    print(result.render())
    return 0 if result.ok else 1


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = round(width * done / total) if total else 0
    return "#" * filled + ("-" * (width - filled))


def _cmd_progress(args: argparse.Namespace) -> int:
    print("Checking every exercise ...", flush=True)
    results = progress()
    width = max((len(result.lesson.title) for result in results), default=0)
    for result in results:
        status = "done" if result.ok else f"{result.passed}/{len(result.outcomes)} checks"
        if result.outcomes and all("ExerciseImportError" in o.reason for o in result.outcomes):
            status = f"does not import: see `course check {result.lesson.number}`"
        if result.problem:
            status = "cannot run"
        print(f"  {result.lesson.number}  {result.lesson.title:<{width}} {status}")
    done = sum(r.ok for r in results)
    print(f"Progress: [{_bar(done, len(results))}] {done}/{len(results)} exercises solved")
    return 0


def _cmd_hint(args: argparse.Namespace) -> int:
    lesson = find_lesson(args.lesson)
    print(f"Checking which checks of lesson {lesson.number} fail ...", flush=True)
    print(run_check(lesson.number, "exercises").render_hints())
    return 0


def _cmd_reset(args: argparse.Namespace) -> int:
    lesson = find_lesson(args.lesson)
    target = lesson.path("exercise")
    stub = stub_for(lesson)
    shown = target.relative_to(course_root())
    if target.exists():
        current = target.read_text(encoding="utf-8")
        if current == stub:
            print(f"{shown} is already the original stub; nothing to do.")
            return 0
        backups = target.parent / ".backups"
        backups.mkdir(exist_ok=True)
        backup = backups / f"{lesson.stem}.{time.strftime('%Y%m%d-%H%M%S')}.py"
        n = 1
        while backup.exists():
            backup = backups / f"{lesson.stem}.{time.strftime('%Y%m%d-%H%M%S')}-{n}.py"
            n += 1
        backup.write_text(current, encoding="utf-8")
        print(f"Saved your version as {backup.relative_to(course_root())}")
    target.write_text(stub, encoding="utf-8")
    print(f"Restored {shown} to the original stub.")
    return 0


def _resolve_app(lesson: Lesson, solution: bool) -> object:
    if lesson.serve and not solution:
        module_name, _, attribute = lesson.serve.partition(":")
        import importlib

        return getattr(importlib.import_module(module_name), attribute)
    try:
        module = load_exercise(lesson.stem, "solutions" if solution else "exercises")
    except ExerciseImportError as exc:
        raise CommandError(str(exc)) from None
    app = getattr(module, "app", None)
    if app is None:
        raise CommandError(f"lesson {lesson.number}'s exercise defines no `app` to serve")
    return app


def _cmd_serve(args: argparse.Namespace) -> int:
    import socket

    import uvicorn

    lesson = find_lesson(args.lesson)
    app = _resolve_app(lesson, args.solution)
    with socket.socket() as probe:  # a clear message instead of uvicorn's exit on a busy port
        if probe.connect_ex(("127.0.0.1", args.port)) == 0:
            raise CommandError(f"port {args.port} is in use; pick another with --port")
    base = f"http://127.0.0.1:{args.port}"
    print(f"Serving lesson {lesson.number} on {base}  (Ctrl+C stops)")
    for entry in lesson.try_paths or _get_routes(app):
        if entry.startswith("PAGE "):
            print(f"Open in a browser: {base}{entry.removeprefix('PAGE ')}")
        elif entry.startswith("/"):
            print(f'Try: curl -N "{base}{entry}"')
        else:  # curl arguments, URL standing for the server's address; "POST ..." for -X POST
            verb, _, rest = entry.partition(" ")
            if verb in _VERBS:
                entry = f"-X {verb} {rest}"
            print(f"Try: curl -N {entry.replace('URL', base)}")
    # The app's own `lesson.*` loggers speak at INFO, next to uvicorn's lines.
    show_lesson_logs()
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, log_level="info", timeout_graceful_shutdown=2
    )
    return 0


_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _get_routes(app: object) -> list[str]:
    """GET routes without path parameters, for lessons whose manifest names no `try`."""
    routes = getattr(app, "routes", [])
    return [
        route.path
        for route in routes
        if "GET" in (getattr(route, "methods", None) or ())
        and "{" not in route.path
        and not route.path.startswith(("/docs", "/redoc", "/openapi"))
    ] or ["/"]


def _cmd_lab(args: argparse.Namespace) -> int:
    root = course_root()
    first = load_lessons()[0].path("notebook").relative_to(root)
    # The course's settings overrides: no news prompt, no update check (learners may be offline).
    settings = Path(__file__).with_name("jupyterlab_settings")
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.app_settings_dir={settings}",
        # The URL JupyterLab prints (and opens) is lesson 00, not the Launcher.
        f"--LabApp.default_url=/lab/tree/{first.as_posix()}",
    ]
    if _is_root() and "--allow-root" not in args.jupyter_args:
        # Containers often run as root, where JupyterLab refuses to start without this.
        print("course lab: running as root (a container?), so passing --allow-root")
        command.append("--allow-root")
    command += args.jupyter_args
    if os.name != "posix":
        return subprocess.call(command, cwd=root)
    # Become JupyterLab rather than wait for it, so that a signal meant for `course lab`
    # (a kill, a supervisor's SIGTERM) reaches JupyterLab instead of orphaning it.
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(root)
    os.execv(sys.executable, command)


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _cmd_verify(args: argparse.Namespace) -> int:
    """Developer check (rustlings' dev check): every lesson is complete and unsolved."""
    problems: list[str] = []
    for lesson in load_lessons():
        for kind in ("notebook", "exercise", "solution", "test"):
            if not lesson.path(kind).exists():
                problems.append(
                    f"{lesson.number}: missing {lesson.path(kind).relative_to(course_root())}"
                )
        if not lesson.path("solution").exists() or not lesson.path("test").exists():
            continue
        exercise = lesson.path("exercise")
        if not exercise.exists() or exercise.read_text(encoding="utf-8") != stub_for(lesson):
            problems.append(
                f"{lesson.number}: exercises/ is out of date; run: python -m course_app.checking.stubs"
            )
        if "TODO" not in stub_for(lesson):
            problems.append(f"{lesson.number}: the stub has no TODO telling the learner what to do")
        solved = run_check(lesson.number, "solutions")
        if not solved.ok:
            score = f"{solved.passed}/{len(solved.outcomes)}"
            problems.append(f"{lesson.number}: the solution fails its tests ({score} pass)")
        stub = run_check(lesson.number, "exercises")
        if stub.ok or not stub.outcomes:
            problems.append(
                f"{lesson.number}: the untouched stub passes its tests; add a test it fails"
            )
        print(f"{lesson.number}: solution {solved.passed}/{len(solved.outcomes)} pass, "
              f"stub {stub.passed}/{len(stub.outcomes)} pass")  # fmt: skip
    for problem in problems:
        print("problem:", problem)
    print("verify:", "ok" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1


def _cmd_guide(args: argparse.Namespace) -> int:
    from course_app.checking.field_guide import main as guide

    return guide(args.words)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="course", description="Streaming & SSE with FastAPI")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    add("list", _cmd_list, "list the lessons")
    p = add("check", _cmd_check, "run a lesson's exercise tests against your exercises/ file")
    p.add_argument("lesson", help="lesson number, e.g. 03")
    p.add_argument("--solutions", action="store_true", help="check the reference solution instead")
    add("progress", _cmd_progress, "show which exercises you have solved")
    p = add("hint", _cmd_hint, "hints for the checks of a lesson that fail now")
    p.add_argument("lesson")
    p = add("reset", _cmd_reset, "restore an exercise to its original stub (keeps a backup)")
    p.add_argument("lesson")
    p = add("serve", _cmd_serve, "serve a lesson's app for curl or a browser")
    p.add_argument("lesson")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--solution", action="store_true", help="serve the reference solution's app")
    add("lab", _cmd_lab, "open JupyterLab at lesson 00 (other options go to JupyterLab)")
    p = add("guide", _cmd_guide, "search the field guide: from a symptom to the cell that fixes it")
    p.add_argument("words", nargs="*", help='words or a "quoted phrase" from the symptom or error')
    add("verify", _cmd_verify, "developer check: solutions pass, stubs fail, stubs in sync")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "lab":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.jupyter_args = extra
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    try:
        return args.handler(args)
    except (UnknownLessonError, CommandError) as exc:
        print(f"course: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `course guide | head` closed the pipe: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
