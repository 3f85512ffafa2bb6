"""A token in every form that changes state, checked against the session."""

import hmac
import secrets

from flask import abort, request, session

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token() -> str:
    if "csrf_token" not in session:
        session["csrf_token"] = secrets.token_urlsafe(32)
    return session["csrf_token"]


def check_csrf_token() -> None:
    if request.method in SAFE_METHODS:
        return
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
