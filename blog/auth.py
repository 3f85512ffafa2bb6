import functools
import re

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from .db import get_db
from .models import USERNAME_MAX_LENGTH, User

bp = Blueprint("auth", __name__, url_prefix="/auth")

# Also the form's pattern attribute: browsers compile it with the v flag, which
# wants the "-" in a set escaped.
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]+")
USERNAME_MIN_LENGTH = 3
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 200


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
    }


@bp.before_app_request
def load_logged_in_user() -> None:
    user_id = session.get("user_id")
    g.user = get_db().get(User, user_id) if user_id is not None else None


def account_errors(username: str, password: str) -> list[str]:
    """Everything wrong with a new account's name and password, to show at once."""
    errors = []
    if not USERNAME_MIN_LENGTH <= len(username) <= USERNAME_MAX_LENGTH:
        errors.append(
            f"Username must be {USERNAME_MIN_LENGTH} to {USERNAME_MAX_LENGTH} characters long."
        )
    if username and not USERNAME_PATTERN.fullmatch(username):
        errors.append("Username may contain only letters, digits, '_', '.' and '-'.")
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        errors.append(
            f"Password must be {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters long."
        )
    return errors


@bp.route("/register", methods=("GET", "POST"))
def register():
    if request.method == "GET":
        return render_template("auth/register.html", username="")
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    errors = account_errors(username, password)
    if errors:
        for error in errors:
            flash(error, "error")
        # The form comes back with the name as typed; a password never does.
        return render_template("auth/register.html", username=username), 400
    # Hash first: the write lock is taken only once the row is ready.
    password_hash = generate_password_hash(password)
    db = get_db()
    db.add(User(username=username, password_hash=password_hash))
    try:
        db.commit()
    except IntegrityError:
        # The unique constraint decides what "taken" means, the way the
        # database compares names (case-insensitively on MariaDB, for one).
        db.rollback()
        flash(f"Username {username} is already taken.", "error")
        return render_template("auth/register.html", username=username), 409
    flash(f"Registered as {username}. Log in to start writing.", "success")
    # The login form comes filled in with the new name.
    return redirect(url_for("auth.login", username=username))


@bp.route("/login", methods=("GET", "POST"))
def login():
    if request.method == "GET":
        return render_template("auth/login.html", username=request.args.get("username", ""))
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    db = get_db()
    user = db.scalar(select(User).where(User.username == username))
    # End the transaction before the slow password check, so that it never
    # runs while this request holds the write lock.
    db.commit()
    if user is None or not check_password_hash(user.password_hash, password):
        flash("Incorrect username or password.", "error")
        return render_template("auth/login.html", username=username), 401
    session.clear()
    session["user_id"] = user.id
    flash(f"Logged in as {user.username}.", "success")
    return redirect(url_for("posts.index"))


@bp.post("/logout")
def logout():
    session.clear()
    flash("Logged out.", "success")  # after clear(), which would drop it too
    return redirect(url_for("posts.index"))
