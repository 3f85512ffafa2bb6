"""A WSGI app as `python run.py` serves it: a request reaches the app only once
its body is whole.

granian's own WSGI interface hands a request to one of a worker's few threads
as soon as its headers arrive, and that thread then waits for the body as it
trickles in: sixteen clients that stopped sending mid-body stopped the blog.
Here granian's native interface (RSGI) reads the body on the worker's event
loop, where a waiting client holds no thread, within a deadline and a size;
only then does a thread run the WSGI app, with the body in memory. Pages and
styles go back gzipped to clients that accept it.
"""

import asyncio
import gzip
import io
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from werkzeug.utils import import_string

# A body must arrive whole within this long: a form of the blog is a few
# kilobytes, which the slowest connection still in use sends in a second.
BODY_SECONDS = 10
# The largest body read: the blog's own limit (MAX_CONTENT_LENGTH) is below it.
MAX_BODY_BYTES = 2 * 1024 * 1024


class WholeRequests:
    """An RSGI app that runs a WSGI app on THREADS threads, a request at a time
    on each, with its body already read.

    A request that page_now(environ) answers (the blog's anonymous pages from
    its cache) is answered on the event loop itself: handing it to a thread
    and back would cost more than finding the page.
    """

    def __init__(
        self, wsgi_app: Callable, threads: int, page_now: Callable[[dict], Any] | None = None
    ) -> None:
        self.wsgi_app, self.page_now = wsgi_app, page_now
        self.threads = ThreadPoolExecutor(threads, thread_name_prefix="request")

    async def __rsgi__(self, scope, protocol) -> None:
        declared = scope.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            return refuse(protocol, 413, "The request's body is too large.")
        try:
            body = await read_body(protocol) if has_body(scope) else b""
        except TimeoutError:
            return refuse(
                protocol, 408, f"The request's body did not arrive within {BODY_SECONDS} s."
            )
        except BodyTooLarge:
            return refuse(protocol, 413, "The request's body is too large.")
        request = environ(scope, body)
        page = self.page_now(request) if self.page_now else None
        if page is not None:
            status = int(page.status[:3])
            headers, content = negotiated(request, status, page.headers, page.body, page.gzipped)
        else:
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(self.threads, self.respond, request)
            status, headers, content = answer
        protocol.response_bytes(status, headers, content)

    def respond(self, environ: dict) -> tuple[int, list[tuple[str, str]], bytes]:
        """The WSGI app's answer, whole (the blog's pages are never streamed),
        compressed here, on the thread, if the client accepts it."""
        started: list = []
        written: list[bytes] = []

        def start_response(status: str, headers: list, exc_info=None):
            if exc_info and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [status, headers]
            return written.append

        chunks = self.wsgi_app(environ, start_response)
        try:
            content = b"".join([*written, *chunks])
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        status, headers = started
        code = int(status[:3])
        return code, *negotiated(environ, code, headers, content)


class BodyTooLarge(Exception):
    pass


def has_body(scope) -> bool:
    headers = scope.headers
    return headers.get("content-length", "0") != "0" or "transfer-encoding" in headers


async def read_body(protocol) -> bytes:
    body = bytearray()
    async with asyncio.timeout(BODY_SECONDS):
        async for chunk in protocol:
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise BodyTooLarge()
    return bytes(body)


# What is sent gzipped to a client that accepts it: text, the blog's pages and
# styles, a few times smaller. Not below a size where the header outweighs the gain.
COMPRESSED_TYPES = ("text/html", "text/css", "image/svg+xml")
MIN_COMPRESSED_BYTES = 512


def accepts_gzip(request: dict) -> bool:
    for coding in request.get("HTTP_ACCEPT_ENCODING", "").lower().split(","):
        name, *parameters = (part.strip() for part in coding.split(";"))
        if name == "gzip":
            for parameter in parameters:
                key, _, value = parameter.partition("=")
                if key.strip() == "q":
                    try:
                        return float(value) > 0
                    except ValueError:
                        return False
            return True
    return False


def compressible(status: int, headers: list, content: bytes) -> bool:
    """A whole answer of text, of some size, not already encoded."""
    names = {name.lower(): value for name, value in headers}
    return (
        status == 200
        and len(content) >= MIN_COMPRESSED_BYTES
        and "content-encoding" not in names
        and "content-range" not in names
        and names.get("content-type", "").startswith(COMPRESSED_TYPES)
    )


def gzip_of(headers: list, content: bytes) -> bytes | None:
    """The body gzipped, if it is worth it (for the page cache, which keeps it)."""
    if not compressible(200, headers, content):
        return None
    # Level 5: most of level 9's gain for a fraction of its time.
    return gzip.compress(content, compresslevel=5, mtime=0)


def negotiated(
    request: dict, status: int, headers: list, content: bytes, compressed: bytes | None = None
) -> tuple[list, bytes]:
    """The answer as this client takes it: gzipped if it accepts that and the
    answer is worth compressing (compressed, if given, is the body gzipped)."""
    if not compressible(status, headers, content):
        return headers, content
    vary = [value for name, value in headers if name.lower() == "vary"]
    kept = [(name, value) for name, value in headers if name.lower() != "vary"]
    # Either way a cache must tell the two encodings apart.
    kept.append(("Vary", ", ".join([*vary, "Accept-Encoding"])))
    if request["REQUEST_METHOD"] != "GET" or not accepts_gzip(request):
        return kept, content
    compressed = compressed or gzip.compress(content, compresslevel=5, mtime=0)
    encoded = [
        # Another encoding is other bytes: a strong ETag would claim the same ones.
        (name, value if value.startswith("W/") else f"W/{value}")
        if name.lower() == "etag"
        else (name, value)
        for name, value in kept
        if name.lower() != "content-length"
    ]
    encoded += [("Content-Encoding", "gzip"), ("Content-Length", str(len(compressed)))]
    return encoded, compressed


def refuse(protocol, status: int, reason: str) -> None:
    # The connection closes after the answer: what is left of the body is never read.
    headers = [("content-type", "text/plain; charset=utf-8"), ("connection", "close")]
    protocol.response_str(status, headers, f"{status}: {reason}\n")


def environ(scope, body: bytes) -> dict:
    """The WSGI environ of a request (PEP 3333) from granian's RSGI scope."""
    host, _, port = scope.server.rpartition(":")
    client, _, client_port = scope.client.rpartition(":")
    client = client.removeprefix("[").removesuffix("]")  # an IPv6 address, as WSGI gives it
    environ = {
        "REQUEST_METHOD": scope.method,
        "SCRIPT_NAME": "",
        # WSGI's strings hold the request's bytes as latin-1; granian decoded the path as UTF-8.
        "PATH_INFO": scope.path.encode().decode("latin-1"),
        "QUERY_STRING": scope.query_string,
        "SERVER_NAME": host,
        "SERVER_PORT": port,
        "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
        "REMOTE_ADDR": client,
        "REMOTE_PORT": client_port,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.scheme,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in scope.headers.items():
        if "_" in name:
            continue  # else X_Forwarded_For could pass for X-Forwarded-For
        key = name.upper().replace("-", "_")
        if key == "CONTENT_LENGTH":
            continue  # the body's, set above (a chunked body has none)
        if key != "CONTENT_TYPE":
            key = "HTTP_" + key
        if key in environ:
            environ[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
        else:
            environ[key] = value
    return environ


def served_app() -> WholeRequests:
    """In each granian worker: the app that BLOG_SERVED_APP ("module:factory")
    makes, on BLOG_THREADS threads, as run.py's serve_wsgi() set them."""
    stop_with_the_server(os.getppid())
    app = import_string(os.environ["BLOG_SERVED_APP"])()
    anonymous_pages = getattr(app, "extensions", {}).get("anonymous_pages")  # the blog's
    page_now = anonymous_pages.page_now if anonymous_pages else None
    return WholeRequests(app, int(os.environ["BLOG_THREADS"]), page_now)


def stop_with_the_server(server: int) -> None:
    """Stop this worker as if told to once the server process that started it is
    gone (killed), rather than serve on as an orphan that holds the port."""

    def watch() -> None:
        while os.getppid() == server:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-the-server", daemon=True).start()
