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
