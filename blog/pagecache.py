"""The pages anonymous readers see, rendered once per worker process and kept
until any process commits anything to the database.

SQLite's `PRAGMA data_version` changes, for a connection, whenever another
connection has committed to the file: a post, a migration, `run.py restore`,
any process. Each request for a cacheable page reads it first, on a connection
kept for nothing else, and empties the cache if it moved. A page is kept only
if no commit was seen between that check and the page's end: its reads began
after the check, so it is never older than the last commit the next request
will look for. On a database server nothing is cached.
"""

import os
import sqlite3
import threading
from collections import OrderedDict

from flask import Response, current_app, g, request, session

from .db import refuse_a_moved_file

# The read-only pages a reader who is not logged in may be shown from the cache.
CACHEABLE_ENDPOINTS = frozenset({"posts.index", "posts.detail", "posts.users", "posts.user"})
# Pages per worker process (a few KiB each); the oldest goes first.
MAX_PAGES = 500


class PageCache:
    def __init__(self, path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.pages: OrderedDict[str, tuple[bytes, int, list]] = OrderedDict()
        self.version: int | None = None
        self.watcher: sqlite3.Connection | None = None
        self.watcher_pid: int | None = None

    def current_version(self) -> int:
        """The database's change counter, as a connection of this process's own
        sees it (its own commits would not move it: it never writes)."""
        if self.watcher_pid != os.getpid():  # none yet, or inherited across a fork
            # mode=rw: a missing file is an error, never created empty.
            self.watcher = sqlite3.connect(
                self.path.resolve().as_uri() + "?mode=rw",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
            self.watcher_pid = os.getpid()
        assert self.watcher is not None
        return self.watcher.execute("PRAGMA data_version").fetchone()[0]

    def look_up(self, key: str) -> tuple[int, tuple[bytes, int, list] | None]:
        """The version the cache now holds pages of, and the page kept under key."""
        with self.lock:
            version = self.current_version()
            if version != self.version:
                self.pages.clear()
                self.version = version
            return version, self.pages.get(key)

    def keep(self, key: str, version: int, page: tuple[bytes, int, list]) -> None:
        with self.lock:
            if version != self.version:
                return  # a commit was seen since the page began: it may be older
            self.pages[key] = page
            while len(self.pages) > MAX_PAGES:
                self.pages.popitem(last=False)


def cacheable() -> bool:
    return (
        request.method in ("GET", "HEAD")
        and request.endpoint in CACHEABLE_ENDPOINTS
        and g.user is None
        and "_flashes" not in session
    )


def serve_from_cache():
    cache = current_app.extensions["page_cache"]
    if cache is None or not cacheable():
        return None
    refuse_a_moved_file()  # a cached page must not outlive its file either
    try:
        g.page_version, page = cache.look_up(request.full_path)
    except sqlite3.Error:
        return None  # the page, made the usual way, says what is wrong
    if page is None:
        return None
    g.page_version = None  # a page from the cache is not kept again
    body, status, headers = page
    return Response(body, status, headers)


def keep_in_cache(response: Response) -> Response:
    version = g.pop("page_version", None)
    if version is not None and response.status_code == 200 and not response.is_streamed:
        current_app.extensions["page_cache"].keep(
            request.full_path,
            version,
            (response.get_data(), response.status_code, list(response.headers.items())),
        )
    return response


def init_app(app) -> None:
    """After auth has loaded the user, and before the security headers, which
    every response gets anew."""
    database_file = app.extensions["db_file"]
    app.extensions["page_cache"] = PageCache(database_file.path) if database_file else None
    app.before_request(serve_from_cache)
    app.after_request(keep_in_cache)
