import functools
import re

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from .db import get_db
from .models import USERNAME_MAX_LENGTH, User

bp = Blueprint("auth", __name__, url_prefix="/auth")

USERNAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
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


@bp.before_app_request
def load_logged_in_user() -> None:
    user_id = session.get("user_id")
    g.user = get_db().get(User, user_id) if user_id is not None else None


def account_error(username: str, password: str) -> str | None:
    if not USERNAME_MIN_LENGTH <= len(username) <= USERNAME_MAX_LENGTH:
        return f"Username must be {USERNAME_MIN_LENGTH} to {USERNAME_MAX_LENGTH} characters long."
    if not USERNAME_PATTERN.fullmatch(username):
        return "Username may contain only letters, digits, '_', '.' and '-'."
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        return f"Password must be {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters long."
    return None


@bp.route("/register", methods=("GET", "POST"))
def register():
    if request.method == "GET":
        return render_template("auth/register.html")
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    error = account_error(username, password)
    if error is not None:
        flash(error)
        return render_template("auth/register.html"), 400
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
        flash(f"Username {username} is already taken.")
        return render_template("auth/register.html"), 409
    flash("Registered. Please log in.")
    return redirect(url_for("auth.login"))


@bp.route("/login", methods=("GET", "POST"))
def login():
    if request.method == "GET":
        return render_template("auth/login.html")
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    db = get_db()
    user = db.scalar(select(User).where(User.username == username))
    # End the transaction before the slow password check, so that it never
    # runs while this request holds the write lock.
    db.commit()
    if user is None or not check_password_hash(user.password_hash, password):
        flash("Incorrect username or password.")
        return render_template("auth/login.html"), 401
    session.clear()
    session["user_id"] = user.id
    return redirect(url_for("posts.index"))


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("posts.index"))
