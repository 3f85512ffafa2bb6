"""Headers that tell the browser what the blog's pages may do."""

from flask import Response, current_app, request

SECURITY_HEADERS = {
    # Scripts, styles, images and forms from the blog itself only: no inline
    # script or style, so injected markup cannot run.
    "Content-Security-Policy": (
        "default-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors, for browsers that predate it
    "Referrer-Policy": "same-origin",
    # No window the blog opens, or that opens it, can reach into the other.
    "Cross-Origin-Opener-Policy": "same-origin",
}


def add_security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    hsts = current_app.config["HSTS_SECONDS"]
    if hsts and request.is_secure:  # browsers heed it only over HTTPS
        response.headers["Strict-Transport-Security"] = f"max-age={hsts}"
    if response.mimetype == "text/html":
        # Every page names who is logged in: no cache may keep one for the next reader.
        response.headers["Cache-Control"] = "no-store"
    return response
