"""Keep server logs out of notebook cells, and in a list you can print.

uvicorn runs in a background thread, and anything it prints lands in whichever cell happens
to be running. So the course routes the ``uvicorn`` logger (and the ``lesson`` logger that
lesson apps use) to :class:`LogBook` instead of stderr. ``server.logs`` then shows what was
logged, when *you* decide to print it.
"""

import logging
import threading

CAPTURED_LOGGERS = ("uvicorn", "lesson", "sse_starlette")


class LogBook(logging.Handler):
    """A logging handler that appends one line per record to every open book."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self._books: list[list[str]] = []
        self._lock_books = threading.Lock()

    def open_book(self) -> list[str]:
        book: list[str] = []
        with self._lock_books:
            self._books.append(book)
        return book

    def close_book(self, book: list[str]) -> None:
        with self._lock_books:
            self._books = [b for b in self._books if b is not book]

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = f"{record.levelname} {record.name}: {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                line += f" ({type(exc).__name__}: {exc})"
        except Exception:  # a broken log call must never break a server
            line = f"{record.levelname} {record.name}: <unformattable message>"
        with self._lock_books:
            for book in self._books:
                book.append(line)


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
        return _logbook
