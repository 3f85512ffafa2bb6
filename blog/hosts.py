"""The Host header a request names: one the blog can answer to, or a plain 400;
and redirects that never repeat it."""

import logging
import re
from urllib.parse import urlsplit, urlunsplit

from flask import Response
from werkzeug.sansio.utils import host_is_trusted

from .headers import SECURITY_HEADERS

# A DNS name (labels of 1 to 63 letters, digits and inner hyphens) or an IPv4
# address, or an IPv6 address in brackets; then perhaps a port.
LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
USABLE_HOST = re.compile(rf"(?:(?:{LABEL}\.)*{LABEL}\.?|\[[0-9A-Fa-f:.]+\])(?::(\d{{1,5}}))?")
MAX_NAME_LENGTH = 254  # DNS's 253, and a final dot

REFUSAL = b"400 Bad Request: the Host header names no host this blog can answer to.\n"


def answered(host: str, trusted: list[str] | None) -> bool:
    """Whether the blog answers a request naming host: a usable one, and one of
    BLOG_HOSTS when that is set."""
    return usable(host) and (not trusted or host_is_trusted(host, trusted))


def usable(host: str) -> bool:
    found = USABLE_HOST.fullmatch(host)
    if not found:
        return False
    port = found[1]
    name = host[: -len(port) - 1] if port else host
    return len(name) <= MAX_NAME_LENGTH and (port is None or 1 <= int(port) <= 65535)


class UsableHostsOnly:
    """Around the app: a request whose Host no URL can be built for is refused
    before Flask sees it (Flask would fail to build even its error page)."""

    def __init__(self, wsgi_app, logger: logging.Logger) -> None:
        self.wsgi_app, self.logger = wsgi_app, logger

    def __call__(self, environ, start_response):
        host = environ.get("HTTP_HOST")
        if host is None or usable(host):
            return self.wsgi_app(environ, start_response)
        self.logger.warning("refused a request naming the Host %r", host[:100])
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(REFUSAL))),
            *SECURITY_HEADERS.items(),
        ]
        start_response("400 BAD REQUEST", headers)
        return [REFUSAL]


def relative_redirect(response: Response) -> Response:
    """Werkzeug's own redirects (/post//1 to /post/1) name the request's host:
    a redirect goes to a path of this blog, never to a host a request gave."""
    location = response.headers.get("Location")
    if location:
        parts = urlsplit(location)
        if parts.netloc:
            response.headers["Location"] = urlunsplit(("", "", parts.path, parts.query, ""))
    return response


def init_app(app) -> None:
    app.after_request(relative_redirect)
    app.wsgi_app = UsableHostsOnly(app.wsgi_app, app.logger)
