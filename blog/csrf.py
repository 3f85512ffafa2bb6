"""A token in every form that changes state, checked against the session."""

import hmac
import secrets

from flask import abort, request, session

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token() -> str:
    if "csrf_token" not in session:
        session["csrf_token"] = secrets.token_urlsafe(32)
    return session["csrf_token"]


# More fields than any form of the blog has, by far; Flask's MAX_FORM_PARTS
# limits a multipart form, this a urlencoded one.
MAX_FORM_FIELDS = 1000


def check_csrf_token() -> None:
    if request.method in SAFE_METHODS:
        return
    # Before the form is parsed, which for 349,000 empty fields takes half a second.
    urlencoded = request.mimetype == "application/x-www-form-urlencoded"
    if urlencoded and request.get_data(cache=True).count(b"&") >= MAX_FORM_FIELDS:
        abort(400, f"A form may have at most {MAX_FORM_FIELDS:,} fields.")
    expected = session.get("csrf_token", "")
    sent = request.form.get("csrf_token", "")
    # compare_digest takes as long however many leading characters match.
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(
            400,
            "The form's security token is missing or out of date. "
            "Go back, reload the page and send the form again.",
        )


def init_app(app) -> None:
    app.before_request(check_csrf_token)
    app.jinja_env.globals["csrf_token"] = csrf_token
