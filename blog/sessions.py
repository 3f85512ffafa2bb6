"""Who is logged in: a row per logged-in browser, and its token in the signed cookie.

Django's model. The cookie holds a random token whose hash names a
user_session row, and a hash of the account's password hash. Logging out
deletes the row, so a saved cookie never works again. A new database (`run.py
init`, a downgrade) has no rows, and a deleted account takes its rows with it,
so a cookie never logs in as whoever gets the same id next. Changing the
password changes the hash the cookie must match, which ends every other
session even where the row survived.

A session ends after SESSION_IDLE_SECONDS without a request (Flask refuses a
cookie signed longer ago than PERMANENT_SESSION_LIFETIME, and the cookie is
signed anew as requests come) and SESSION_MAX_SECONDS after login, however busy.
"""

import contextlib
import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from flask import current_app, g, has_request_context, request, session
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import BadSignature
from sqlalchemy import bindparam, delete, select

from .db import get_db, reading
from .models import User, UserSession, utcnow


class LoggedInUser(NamedTuple):
    """The account a request's cookie logs in, as it was when the request began."""

    id: int
    username: str
    password_hash: str


USER_WITH_SESSION_TOKEN = (
    select(User.id, User.username, User.password_hash, UserSession.created)
    .join(UserSession.user)
    .where(UserSession.token_hash == bindparam("token_hash"))
    .where(UserSession.created > bindparam("oldest"))
)


class CookieSignedNowAndThen(SecureCookieSessionInterface):
    """Flask signs a lasting session's cookie anew on every request, to push its
    idle timeout back, which took a tenth of a logged-in page's time. This signs
    it again once a tenth of the idle time has passed since it was last signed:
    a session then ends 0.9 to 1.0 times SESSION_IDLE_SECONDS after its last request."""

    def open_session(self, app, request):
        # Flask's own, keeping when the cookie was signed.
        serializer = self.get_signing_serializer(app)
        if serializer is None:
            return None
        opened = self.session_class()
        cookie = request.cookies.get(self.get_cookie_name(app))
        if cookie:
            with contextlib.suppress(BadSignature):
                data, signed = serializer.loads(
                    cookie,
                    max_age=int(app.permanent_session_lifetime.total_seconds()),
                    return_timestamp=True,
                )
                opened = self.session_class(data)
                opened.signed = signed
        return opened

    def get_cookie_name(self, app) -> str:
        return cookie_name(super().get_cookie_name(app))

    def get_cookie_secure(self, app) -> bool:
        return cookie_secure(app)

    def should_set_cookie(self, app, session) -> bool:
        signed = getattr(session, "signed", None)
        return session.modified or (
            session.permanent
            and (
                signed is None or datetime.now(UTC) - signed >= app.permanent_session_lifetime / 10
            )
        )


def over_https() -> bool:
    return has_request_context() and request.is_secure


def cookie_name(name: str) -> str:
    """Over HTTPS, the __Host- form of a cookie's name: a browser then keeps it
    only if it is Secure and for this host's whole site, never a subdomain's."""
    return f"__Host-{name}" if over_https() else name


def cookie_secure(app) -> bool:
    """Secure whenever the request came over HTTPS, and always with BLOG_SECURE_COOKIES=1
    (behind a proxy that speaks HTTPS to the browser and HTTP to the blog)."""
    return app.config["SESSION_COOKIE_SECURE"] or over_https()


def token_hash(token: str) -> str:
    # Only the hash is stored: a copy of the database logs nobody in.
    return hashlib.sha256(token.encode()).hexdigest()


def password_mark(password_hash: str) -> str:
    """What the cookie must hold of the account's password hash (Django's session auth hash)."""
    key = current_app.secret_key
    assert isinstance(key, str | bytes)
    key_bytes = key.encode() if isinstance(key, str) else key
    return hmac.new(key_bytes, password_hash.encode(), hashlib.sha256).hexdigest()


def logged_in_user() -> LoggedInUser | None:
    """The account this request's cookie was issued to, if that session is still
    on; g.session_ends says until when at most (for the page cache)."""
    token = session.get("token")
    if not isinstance(token, str):
        return None
    lifetime = timedelta(seconds=current_app.config["SESSION_MAX_SECONDS"])
    oldest = utcnow() - lifetime
    params = {"token_hash": token_hash(token), "oldest": oldest}
    # Read apart from the request's session: a page that needs nothing else
    # from the database opens no session, and a write's session begins with
    # the write. That saved 8 % of the instructions of a new post's two requests.
    with reading() as connection:
        found = connection.execute(USER_WITH_SESSION_TOKEN, params).first()
    if found is None or not hmac.compare_digest(
        session.get("password_mark", ""), password_mark(found.password_hash)
    ):
        # Forget the login, not the form token: a form sent from a page of
        # the ended session goes on to ask for a login, not fail its CSRF check.
        session.pop("token", None)
        session.pop("password_mark", None)
        return None
    g.session_ends = found.created + lifetime
    return LoggedInUser(found.id, found.username, found.password_hash)


def start_session(user: User) -> None:
    """Log the user in on this browser; the caller commits."""
    db = get_db()
    # Sessions past their lifetime log nobody in: clear them out now and then.
    oldest = utcnow() - timedelta(seconds=current_app.config["SESSION_MAX_SECONDS"])
    db.execute(delete(UserSession).where(UserSession.created <= oldest))
    token = secrets.token_urlsafe(32)
    db.add(UserSession(token_hash=token_hash(token), user=user))
    session.clear()  # nothing from before the login carries over
    session.permanent = True  # the cookie lasts PERMANENT_SESSION_LIFETIME, the idle timeout
    session["token"] = token
    session["password_mark"] = password_mark(user.password_hash)


def end_session() -> None:
    """Log this browser out for good; the caller commits."""
    token = session.get("token")
    if isinstance(token, str):
        get_db().execute(delete(UserSession).where(UserSession.token_hash == token_hash(token)))
    session.clear()


def end_other_sessions(user_id: int, password_hash: str) -> None:
    """After a password change: log the account out everywhere but here; the caller commits."""
    token = session.get("token")
    get_db().execute(
        delete(UserSession)
        .where(UserSession.user_id == user_id)
        .where(UserSession.token_hash != token_hash(token if isinstance(token, str) else ""))
    )
    session["password_mark"] = password_mark(password_hash)
