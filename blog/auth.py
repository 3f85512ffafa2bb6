import functools
import re
import secrets

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash
from zxcvbn import zxcvbn

from .db import get_db
from .forms import refused
from .models import USERNAME_MAX_LENGTH, User
from .sessions import end_other_sessions, end_session, logged_in_user, start_session
from .throttle import (
    clear_failures,
    last_try_warning,
    record_attempt,
    remember_device,
    throttle_key,
)

bp = Blueprint("auth", __name__, url_prefix="/auth")

# Also the form's pattern attribute: browsers compile it with the v flag, which
# wants the "-" in a set escaped.
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]+")
USERNAME_MIN_LENGTH = 3
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 200
# zxcvbn's scores run from 0 to 4; 3 is "safely unguessable", as Django's
# zxcvbn validators default to. It judges the first 32 characters: its time
# grows fast beyond them (up to 0.4 s of CPU at 72), and more only adds strength.
PASSWORD_MIN_SCORE = 3
PASSWORD_JUDGED_LENGTH = 32


def hash_password(password: str) -> str:
    return generate_password_hash(password, method=current_app.config["PASSWORD_HASH_METHOD"])


@functools.cache
def nobodys_password_hash(method: str) -> str:
    """Checked when nobody has the name given, so that an unknown name takes as
    long to refuse as a wrong password. Made at a process's first login, not at
    import or start: hashing is slow on purpose, and the commands and server
    workers that log nobody in should not pay for it."""
    return generate_password_hash(secrets.token_urlsafe(), method=method)


# user.username_key is lower(username), with a unique index.
USER_NAMED_IN_ANY_CASE = select(User).where(User.username_key == bindparam("username_key"))


def login_required(view):
    @functools.wraps(view)
    def wrapped_view(**kwargs):
        if g.user is None:
            return redirect(url_for("auth.login"))
        return view(**kwargs)

    return wrapped_view


@bp.context_processor
def account_rules() -> dict:
    """The rules the forms state and the browser checks, from the ones enforced here."""
    return {
        "username_min": USERNAME_MIN_LENGTH,
        "username_max": USERNAME_MAX_LENGTH,
        "username_pattern": USERNAME_PATTERN.pattern,
        "password_min": PASSWORD_MIN_LENGTH,
        "password_max": PASSWORD_MAX_LENGTH,
        "password_rules": (
            f"{PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters, not containing "
            "the username, and hard to guess: a few words that do not go together work well, "
            "a common password with a digit or a symbol added does not"
        ),
    }


@bp.before_app_request
def load_logged_in_user() -> None:
    g.user = logged_in_user()


def username_errors(username: str) -> list[str]:
    errors = []
    if not USERNAME_MIN_LENGTH <= len(username) <= USERNAME_MAX_LENGTH:
        errors.append(
            f"Username must be {USERNAME_MIN_LENGTH} to {USERNAME_MAX_LENGTH} characters long."
        )
    if username and not USERNAME_PATTERN.fullmatch(username):
        errors.append("Username may contain only letters, digits, '_', '.' and '-'.")
    return errors


def password_errors(username: str, password: str) -> list[str]:
    errors = []
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        errors.append(
            f"Password must be {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters long."
        )
    if username and username.lower() in password.lower():
        errors.append("Password must not contain the username.")
    judged = zxcvbn(password[:PASSWORD_JUDGED_LENGTH], user_inputs=[username]) if password else None
    if judged and judged["score"] < PASSWORD_MIN_SCORE:
        why = judged["feedback"]["warning"] or "It would be guessed quickly."
        errors.append(f"Password is too easy to guess. {why} Add a word or two.")
    return errors


@bp.route("/register", methods=("GET", "POST"))
def register():
    if request.method != "POST":  # GET, or HEAD: a GET without the body
        return render_template("auth/register.html", username="")
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    # Everything wrong with the name and the password, shown at once.
    errors = {
        "username": username_errors(username),
        "password": password_errors(username, password),
    }
    if any(errors.values()):
        # The form comes back with the name as typed; a password never does.
        page = render_template(
            "auth/register.html", username=username, field_errors=refused(errors)
        )
        return page, 400
    # Each account costs a slow hash: as many from one address as failed logins.
    record_attempt(None)
    db = get_db()
    if db.scalar(USER_NAMED_IN_ANY_CASE, {"username_key": username.lower()}):
        return name_taken(username)
    db.commit()  # no lock held through the hash
    # Hash first: the write lock is taken only once the row is ready.
    password_hash = hash_password(password)
    db.add(User(username=username, password_hash=password_hash))
    try:
        db.commit()
    except IntegrityError:
        # The unique index on lower(username) decides what "taken" means.
        db.rollback()
        return name_taken(username)
    flash(f"Registered as {username}. Log in to start writing.", "success")
    # The login form comes filled in with the new name.
    return redirect(url_for("auth.login", username=username))


def name_taken(username: str):
    errors = refused({"username": [f"Username {username} is already taken."]})
    return render_template("auth/register.html", username=username, field_errors=errors), 409


@bp.route("/login", methods=("GET", "POST"))
def login():
    if request.method != "POST":  # GET, or HEAD: a GET without the body
        return render_template("auth/login.html", username=request.args.get("username", ""))
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    # A name no account can have is looked up nowhere, and its failures
    # count under "" (and against the address).
    key = "" if username_errors(username) else username.lower()
    attempt = record_attempt(throttle_key(key) if key else key)  # 429 after too many failures
    db = get_db()
    user = db.scalar(USER_NAMED_IN_ANY_CASE, {"username_key": key}) if key else None
    # End the transaction before the slow password check, so that it never
    # runs while this request holds the write lock.
    db.commit()
    # Made at the first login whatever the name, so that it tells no one which names exist.
    nobodys = nobodys_password_hash(current_app.config["PASSWORD_HASH_METHOD"])
    if not check_password_hash(user.password_hash if user else nobodys, password):
        flash("Incorrect username or password.", "error")
        warning = last_try_warning(attempt, username)
        if warning:
            flash(warning, "error")
        return render_template("auth/login.html", username=username), 401
    assert user is not None  # nobody's password hash matches no password
    clear_failures(key, attempt)
    start_session(user)
    db.commit()
    flash(f"Logged in as {user.username}.", "success")
    response = redirect(url_for("posts.index"))
    remember_device(response, key, user.password_hash)
    return response


@bp.post("/logout")
def logout():
    end_session()
    get_db().commit()
    flash("Logged out.", "success")  # after the session ends, which would drop it too
    return redirect(url_for("posts.index"))


@bp.route("/password", methods=("GET", "POST"))
@login_required
def change_password():
    if request.method != "POST":  # GET, or HEAD: a GET without the body
        return render_template("auth/password.html")
    user = g.user
    current = request.form.get("current_password", "")
    new = request.form.get("new_password", "")
    errors = password_errors(user.username, new)
    if errors:
        page = render_template("auth/password.html", field_errors=refused({"new_password": errors}))
        return page, 400
    key = user.username.lower()
    attempt = record_attempt(throttle_key(key))  # guessing here is throttled too
    if not check_password_hash(user.password_hash, current):
        errors = refused({"current_password": ["The current password is not right."]})
        return render_template("auth/password.html", field_errors=errors), 401
    password_hash = hash_password(new)  # slow on purpose: before the write lock is taken
    db = get_db()
    changed = db.execute(update(User).where(User.id == user.id).values(password_hash=password_hash))
    if changed.rowcount != 1:  # deleted, by hand, since this request found it
        abort(404, "This account no longer exists, so its password was not changed.")
    clear_failures(key, attempt)
    end_other_sessions(user.id, password_hash)
    db.commit()
    flash("Password changed. Every other session of yours is logged out.", "success")
    response = redirect(url_for("posts.index"))
    remember_device(response, key, password_hash)  # this browser alone stays known
    return response
