"""Keep server logs out of notebook cells, and in a list you can print.

uvicorn runs in a background thread, and anything it prints lands in whichever cell happens
to be running. So the course routes the ``uvicorn`` logger (and the ``lesson`` logger that
lesson apps use) to :class:`LogBook` instead of stderr. ``server.logs`` then shows what was
logged, when *you* decide to print it.
"""

import logging
import sys
import threading

CAPTURED_LOGGERS = ("uvicorn", "lesson", "sse_starlette")
# Loggers of lesson apps (and of sse-starlette), shown in a terminal by `course serve`.
APP_LOGGERS = ("lesson", "sse_starlette")
SERVER_THREAD_PREFIX = "lesson-server-"


class LogBook(logging.Handler):
    """A logging handler that appends one line per record to the right server's book.

    A record logged on a server's own thread (its event loop) goes to that server's book
    only; one logged anywhere else (a worker thread running a sync endpoint, the notebook)
    goes to every open book, since it cannot tell which server it belongs to.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self._books: dict[int, tuple[list[str], int | None]] = {}
        self._lock_books = threading.Lock()

    def open_book(self) -> list[str]:
        book: list[str] = []
        with self._lock_books:
            self._books[id(book)] = (book, None)
        return book

    def bind(self, book: list[str], thread_ident: int | None) -> None:
        """Route the records of ``thread_ident`` to ``book`` alone."""
        with self._lock_books:
            self._books[id(book)] = (book, thread_ident)

    def close_book(self, book: list[str]) -> None:
        with self._lock_books:
            self._books.pop(id(book), None)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = f"{record.levelname} {record.name}: {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                line += f" ({type(exc).__name__}: {exc})"
        except Exception:  # a broken log call must never break a server
            line = f"{record.levelname} {record.name}: <unformattable message>"
        with self._lock_books:
            owners = [book for book, ident in self._books.values() if ident == record.thread]
            for book in owners or [book for book, _ in self._books.values()]:
                book.append(line)


class _KeepLessonServersQuiet(logging.Filter):
    """uvicorn's own lines from a lesson server's thread go to its book, nowhere else.

    Under ``course serve``, a lesson app may start a lesson server of its own (lesson 10's
    fake LLM): without this, its start-up lines and tracebacks would be printed by the outer
    uvicorn's handlers, doubling every start-up line in the terminal.
    """

    def __init__(self, book: LogBook) -> None:
        super().__init__()
        self._book = book

    def filter(self, record: logging.LogRecord) -> bool:
        if record.threadName and record.threadName.startswith(SERVER_THREAD_PREFIX):
            self._book.handle(record)
            return False
        return True


def show_lesson_logs(stream: object = None) -> None:
    """Print lesson apps' log lines (INFO and up) to ``stream``: for ``course serve``."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(levelname)-9s %(name)s: %(message)s"))
    for name in APP_LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


_logbook: LogBook | None = None
_install_lock = threading.Lock()


def logbook() -> LogBook:
    """The process-wide :class:`LogBook`, installed on first use (idempotent)."""
    global _logbook
    with _install_lock:
        if _logbook is None:
            _logbook = LogBook()
            for name in CAPTURED_LOGGERS:
                logger = logging.getLogger(name)
                logger.addHandler(_logbook)
                if logger.level == logging.NOTSET:
                    logger.setLevel(logging.INFO)
            # uvicorn's loggers would otherwise reach the kernel's stderr, and its INFO lines
            # carry process ids and ports; warnings and errors are what a lesson wants.
            uvicorn_logger = logging.getLogger("uvicorn")
            uvicorn_logger.propagate = False
            uvicorn_logger.setLevel(logging.WARNING)
            logging.getLogger("uvicorn.access").disabled = True
            logging.getLogger("uvicorn.error").addFilter(_KeepLessonServersQuiet(_logbook))
            # asyncio's own warnings from a server's loop (a burst of writes to a connection
            # the client has just reset: "socket.send() raised exception.") go to its book
            # too; the notebook's own loop still reports to the cell.
            logging.getLogger("asyncio").addFilter(_KeepLessonServersQuiet(_logbook))
        return _logbook
