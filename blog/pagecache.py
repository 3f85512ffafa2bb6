"""Pages rendered once per worker process and kept until any process commits
anything to the database.

SQLite's `PRAGMA data_version` changes, for a connection, whenever another
connection has committed to the file: a post, a migration, `run.py restore`,
any process. Each request for a cacheable page reads it first, on a connection
kept for nothing else, and empties the cache if it moved. A page is kept only
if no commit was seen between that check and the page's end: its reads began
after the check, so it is never older than the last commit the next request
will look for. On a database server nothing is cached.

An anonymous reader's page is kept by its address, and a request that carries
no session cookie is answered from the cache before Flask sees it: nothing in
such a request could make its page differ. A logged-in reader's page is kept
for that login alone (the signed cookie's token, password mark and form token)
and until the session's lifetime ends; logging out, a new password, or a
deleted account is a commit, which empties the cache.
"""

import os
import sqlite3
import threading
from collections import OrderedDict
from datetime import datetime
from typing import NamedTuple
from urllib.parse import parse_qsl, urlencode

from flask import Response, current_app, g, request, session

from .db import refuse_a_moved_file
from .hosts import answered
from .models import utcnow
from .serving import gzip_of

# The read-only pages that may be shown from the cache.
CACHEABLE_ENDPOINTS = frozenset({"posts.index", "posts.detail", "posts.users", "posts.user"})
# What of a query string these pages read: the cursor of a page of posts or users.
PAGE_PARAMETERS = ("before", "after")


# Whose pages a key names: nobody logged in, or one login (see logged_in_reader).
Reader = tuple[str | None, ...]
ANONYMOUS: Reader = ()


class Page(NamedTuple):
    body: bytes
    status: str
    headers: list[tuple[str, str]]  # as sent, the security headers included
    ends: datetime | None  # a logged-in page: when its session's lifetime ends
    gzipped: bytes | None  # the body gzipped once, for clients that accept it (serving.py)


class PageCache:
    """Pages by reader and address, up to max_bytes of them; the oldest goes first."""

    def __init__(self, path, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        self.lock = threading.Lock()
        self.pages: OrderedDict[tuple[Reader, str], Page] = OrderedDict()
        self.bytes = 0
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

    def look_up(self, key: tuple[Reader, str]) -> tuple[int, Page | None]:
        """The version the cache now holds pages of, and the page kept under key."""
        with self.lock:
            version = self.current_version()
            if version != self.version:
                self.pages.clear()
                self.bytes = 0
                self.version = version
            page = self.pages.get(key)
        if page is not None and page.ends is not None and page.ends <= utcnow():
            page = None  # its session is over: the page made now says so
        return version, page

    def keep(self, key: tuple[Reader, str], version: int, page: Page) -> None:
        with self.lock:
            if version != self.version:
                return  # a commit was seen since the page began: it may be older
            replaced = self.pages.pop(key, None)
            self.bytes += size(page) - (size(replaced) if replaced else 0)
            self.pages[key] = page
            while self.bytes > self.max_bytes:
                self.bytes -= size(self.pages.popitem(last=False)[1])


def size(page: Page) -> int:
    return len(page.body) + len(page.gzipped or b"")


def address(environ: dict) -> str:
    """What makes one page differ from another: its scheme, its path and its
    cursor, as the views read them (the first of each name); never the Host or
    a parameter no view reads, which anyone can vary at will."""
    query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True, errors="replace")
    cursor: dict[str, str] = {}
    for name, value in query:
        if name in PAGE_PARAMETERS:
            cursor.setdefault(name, value)
    # The scheme too: a page over HTTPS carries headers one over HTTP does not.
    path = environ["PATH_INFO"]
    return f"{environ['wsgi.url_scheme']}:{path}?{urlencode(sorted(cursor.items()))}"


class AnonymousPagesFirst:
    """Around the Flask app: a request without the session cookie is answered
    from the cache if it can be, before Flask parses anything."""

    def __init__(self, app, wsgi_app) -> None:
        self.cache = app.extensions["page_cache"]
        self.database_file = app.extensions["db_file"]
        self.cookie_name = app.config["SESSION_COOKIE_NAME"]
        self.trusted_hosts = app.config["TRUSTED_HOSTS"]
        self.wsgi_app = wsgi_app

    def page_now(self, environ: dict) -> Page | None:
        """The kept page for an anonymous GET or HEAD, found without waiting for
        anything (blog/serving.py asks on its event loop), or None."""
        if (
            environ["REQUEST_METHOD"] not in ("GET", "HEAD")
            # Any mention of the name sends the request the long way, which is always right.
            or self.cookie_name in environ.get("HTTP_COOKIE", "")
            # A Host the blog refuses (blog/hosts.py) is refused the long way.
            or not answered(environ.get("HTTP_HOST", "localhost"), self.trusted_hosts)
            or not self.database_file.still_there()
        ):
            return None
        try:
            return self.cache.look_up((ANONYMOUS, address(environ)))[1]
        except sqlite3.Error:
            return None  # the page, made the usual way, says what is wrong

    def __call__(self, environ, start_response):
        page = self.page_now(environ)
        if page is None:
            return self.wsgi_app(environ, start_response)
        start_response(page.status, list(page.headers))  # the server may add to it
        return [page.body] if environ["REQUEST_METHOD"] == "GET" else []


def reader() -> Reader | None:
    """Whose page this request asks for, by its signed cookie; None if it is not cached."""
    if request.endpoint not in CACHEABLE_ENDPOINTS or "_flashes" in session:
        return None
    return logged_in_reader() if isinstance(session.get("token"), str) else ANONYMOUS


def logged_in_reader() -> Reader:
    # The login; the password it was made with, so that a cookie kept from
    # before a password change gets no page; and the form token its pages carry.
    return (session["token"], session.get("password_mark"), session.get("csrf_token"))


def serve_from_cache():
    if request.method not in ("GET", "HEAD"):
        return None
    cache = current_app.extensions["page_cache"]
    key = reader()
    if cache is None or key is None:
        return None
    refuse_a_moved_file()  # a cached page must not outlive its file either
    try:
        g.page_version, page = cache.look_up((key, address(request.environ)))
    except sqlite3.Error:
        return None  # the page, made the usual way, says what is wrong
    if page is None:
        return None
    g.page_version = None  # a page from the cache is not kept again
    return Response(page.body, page.status, page.headers)


def keep_in_cache(response: Response) -> Response:
    """The page as sent, once the security headers are on it."""
    version = g.pop("page_version", None)
    if version is None or response.status_code != 200 or response.is_streamed:
        return response
    # As Flask says of any page that read the session, as this one did; for a
    # request without a cookie the cache answers before Flask can.
    response.vary.add("Cookie")
    if g.user is None:
        key, ends = ANONYMOUS, None
    else:
        key, ends = logged_in_reader(), g.session_ends
    body, headers = response.get_data(), list(response.headers.items())
    page = Page(body, response.status, headers, ends, gzip_of(headers, body))
    current_app.extensions["page_cache"].keep((key, address(request.environ)), version, page)
    return response


def init_app(app) -> None:
    """Before auth loads the user (a cached page needs no user) and after the
    security headers are added (registered later, so run sooner)."""
    database_file = app.extensions["db_file"]
    if database_file is None:
        app.extensions["page_cache"] = app.extensions["anonymous_pages"] = None
        return
    app.extensions["page_cache"] = PageCache(database_file.path, app.config["PAGE_CACHE_BYTES"])
    app.before_request(serve_from_cache)
    app.after_request(keep_in_cache)
    app.wsgi_app = app.extensions["anonymous_pages"] = AnonymousPagesFirst(app, app.wsgi_app)
