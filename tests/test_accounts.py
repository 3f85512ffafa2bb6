"""Accounts as a trusted site keeps them, through the test client."""

import multiprocessing
import os
import secrets
import stat
import time
from datetime import timedelta

import pytest
from alembic import command
from flask import g
from sqlalchemy import MetaData, Table, delete, text, update
from werkzeug.security import generate_password_hash

from blog import create_app, instance_secret_key
from blog.db import get_db
from blog.models import LoginFailure, Post, User, UserSession, utcnow

from .conftest import (
    ADD_AUTHOR,
    PASSWORD,
    PASSWORD_HASH,
    AuthActions,
    count_rows,
    error_beside,
    flashes,
    shows_logged_in,
)


def logged_in_as(client) -> str | None:
    with client:
        client.get("/")
        return g.user.username if g.user else None


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("alice", "alice", "Password must be 8 to 200 characters long."),
        ("alice123", "alice123", "Password must not contain the username."),
        ("alice", "my name is ALICE", "Password must not contain the username."),
        *(
            ("alice", common, "Password is too easy to guess.")
            # Common passwords that the rules before zxcvbn let through.
            for common in ("Password1!", "qwerty1234", "iloveyou2", "Summer2024", "P@ssword1")
        ),
    ],
)
def test_register_refuses_weak_passwords(app, auth, username, password, message):
    response = auth.post("/auth/register", {"username": username, "password": password})
    assert response.status_code == 400
    assert any(
        alert.startswith(message) for alert in flashes(response.get_data(as_text=True), "alert")
    )
    assert count_rows(app, User) == 2


def test_the_forms_state_the_password_rules(client, auth):
    rules = "not containing the username, and hard to guess"
    assert rules in client.get("/auth/register").get_data(as_text=True)
    auth.login()
    assert rules in client.get("/auth/password").get_data(as_text=True)


def test_login_ignores_the_case_of_the_name(client, auth):
    assert auth.login("TeSt").status_code == 302
    assert logged_in_as(client) == "test"


def test_a_cookie_is_refused_once_its_account_is_gone(app, client, auth):
    auth.login()
    with app.app_context():
        db = get_db()
        db.execute(update(Post).where(Post.author_id == 1).values(author_id=None))
        db.execute(delete(User).where(User.id == 1))
        db.commit()
        assert db.scalar(text("SELECT count(*) FROM user_session")) == 0
    assert logged_in_as(client) is None


def test_a_cookie_never_logs_in_whoever_gets_the_same_id(app, client, auth, backend):
    auth.login()
    with app.app_context():
        db = get_db()
        # As the database's own tools might: the row goes, its session rows stay,
        # and a new account takes the same id.
        db.execute(
            update(User)
            .where(User.id == 1)
            .values(username="someone", password_hash=generate_password_hash("someone's own"))
        )
        db.commit()
    assert logged_in_as(client) is None


def test_sessions_end_after_their_lifetime(app, client, auth):
    auth.login()
    with app.app_context():
        db = get_db()
        lifetime = timedelta(seconds=app.config["SESSION_MAX_SECONDS"])
        db.execute(update(UserSession).values(created=utcnow() - lifetime))
        db.commit()
    assert logged_in_as(client) is None


def test_change_password_ends_other_sessions(app, client, auth):
    other = app.test_client()
    AuthActions(other).login()
    auth.login()
    response = auth.post(
        "/auth/password", {"current_password": PASSWORD, "new_password": "a brand new secret"}
    )
    assert response.status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert flashes(page, "status") == [
        "Password changed. Every other session of yours is logged out."
    ]
    assert shows_logged_in(page, "test")
    assert logged_in_as(other) is None
    assert count_rows(app, UserSession) == 1

    auth.logout()
    assert auth.login("test", PASSWORD).status_code == 401
    assert auth.login("test", "a brand new secret").status_code == 302


@pytest.mark.parametrize(
    ("current", "new", "status", "field", "message"),
    [
        (
            "wrong password",
            "a brand new secret",
            401,
            "current_password",
            "The current password is not right.",
        ),
        (PASSWORD, "test1234", 400, "new_password", "Password must not contain the username."),
        (PASSWORD, "short", 400, "new_password", "Password must be 8 to 200 characters long."),
    ],
)
def test_change_password_refuses(app, client, auth, current, new, status, field, message):
    auth.login()
    response = auth.post("/auth/password", {"current_password": current, "new_password": new})
    assert response.status_code == status
    page = response.get_data(as_text=True)
    assert message in flashes(page, "alert")
    assert message in error_beside(page, field)
    auth.logout()
    assert auth.login().status_code == 302  # the old password still works


def test_change_password_needs_a_login(client):
    response = client.get("/auth/password")
    assert response.headers["Location"] == "/auth/login"


def test_five_failures_for_a_name_then_429_until_the_window_passes(app, client, auth):
    first_failure = time.monotonic()
    for _ in range(5):
        assert auth.login("test", "wrong password").status_code == 401
    refused = auth.login("test", PASSWORD)
    assert refused.status_code == 429
    # The window runs from the oldest failure, however long the tries took.
    since = time.monotonic() - first_failure
    assert 900 - since - 1 <= int(refused.headers["Retry-After"]) <= 900
    assert "Too many tries. Wait 15 minutes, then try again." in refused.get_data(as_text=True)
    assert auth.login("other", PASSWORD).status_code == 302  # another name is not held up
    with app.app_context():
        db = get_db()
        db.execute(update(LoginFailure).values(created=utcnow() - timedelta(minutes=15)))
        db.commit()
    assert auth.login("TEST", PASSWORD).status_code == 302


def test_a_success_clears_the_names_failures(client, auth):
    for _ in range(4):
        auth.login("test", "wrong password")
    assert auth.login().status_code == 302
    auth.logout()
    for _ in range(5):
        assert auth.login("test", "wrong password").status_code == 401
    assert auth.login().status_code == 429


def test_twenty_failures_from_one_address_then_429(app, client, auth):
    for n in range(20):
        assert auth.login(f"nobody{n}", "wrong password").status_code == 401
    refused = auth.login("test", PASSWORD)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    assert AuthActions(elsewhere).login().status_code == 302


def test_an_unknown_name_costs_a_password_check(client, auth, monkeypatch):
    checked = []

    def check(password_hash, password):
        checked.append(password)
        return False

    monkeypatch.setattr("blog.auth.check_password_hash", check)
    assert auth.login("nobody", "some password").status_code == 401
    assert auth.login("test", "other password").status_code == 401
    assert checked == ["some password", "other password"]


def test_every_response_carries_the_security_headers(app, client, auth):
    auth.login()
    responses = [
        client.get("/"),
        client.get("/post/2"),
        client.get("/post/999"),
        client.get("/static/style.css"),
        client.post("/create", data={"title": "no token"}),
        auth.post("/auth/logout"),
    ]
    for response in responses:
        policy = response.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
        assert "default-src 'self'" in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        # A page names who is logged in; the stylesheet may be kept.
        html = response.mimetype == "text/html"
        assert (response.headers.get("Cache-Control") == "no-store") == html, response.mimetype


@pytest.mark.parametrize(("setting", "secure"), [("1", True), (None, False)])
def test_secure_cookies_setting(database_url, app, monkeypatch, setting, secure):
    if setting is None:
        monkeypatch.delenv("BLOG_SECURE_COOKIES", raising=False)
    else:
        monkeypatch.setenv("BLOG_SECURE_COOKIES", setting)
    blog = create_app({"DATABASE_URL": database_url, "SECRET_KEY": "test"})
    response = AuthActions(blog.test_client()).login()
    assert ("; Secure" in response.headers["Set-Cookie"]) is secure


@pytest.mark.parametrize("value", ["soon", "0", "-5", "1.5"])
def test_session_settings_refuse_what_is_not_a_number_of_seconds(project, runner, value):
    result = runner(project / "run.py", "init", env={"BLOG_SESSION_IDLE_SECONDS": value})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: BLOG_SESSION_IDLE_SECONDS must be a whole number of seconds, not {value!r}"
    )


@pytest.mark.sqlite_only
def test_failed_logins_are_kept_in_the_database(app, auth, backend):
    auth.login("Nobody", "wrong password")
    with app.app_context():
        rows = get_db().execute(text("SELECT username_key, address FROM login_failure")).all()
    assert rows == [("nobody", "127.0.0.1")]


@pytest.mark.processes
def make_a_key_slowly(instance, start, keys):
    # Making a key is slowed down, as a loaded machine or a slow disk would.
    make = secrets.token_hex
    secrets.token_hex = lambda n: time.sleep(0.5) or make(n)
    start.wait()
    keys.put(instance_secret_key(instance))


def test_secret_key_file_appears_whole_to_processes_starting_together(tmp_path):
    instance = tmp_path / "instance"
    # Thirty processes with the blog imported, as a server's workers are, start at once.
    processes = multiprocessing.get_context("fork")
    start, keys = processes.Barrier(30), processes.SimpleQueue()
    starters = [
        processes.Process(target=make_a_key_slowly, args=(instance, start, keys)) for _ in range(30)
    ]
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join(60)
    assert [starter.exitcode for starter in starters] == [0] * 30
    found = {keys.get() for _ in starters}
    assert len(found) == 1 and len(found.pop()) == 64
    assert os.listdir(instance) == ["secret_key"]  # no draft left behind
    assert stat.S_IMODE((instance / "secret_key").stat().st_mode) == 0o600
    assert instance_secret_key(instance) == (instance / "secret_key").read_text()


def test_users_made_before_the_upgrade_still_log_in(alembic_cfg, legacy_db, database_url):
    command.upgrade(alembic_cfg, ADD_AUTHOR)
    user = Table("user", MetaData(), autoload_with=legacy_db)
    with legacy_db.begin() as connection:
        connection.execute(
            user.insert(),
            {"username": "Early.Bird", "password_hash": PASSWORD_HASH, "created": utcnow()},
        )
    command.upgrade(alembic_cfg, "head")
    blog = create_app({"DATABASE_URL": database_url, "SECRET_KEY": "test"})
    assert AuthActions(blog.test_client()).login("early.bird", PASSWORD).status_code == 302


def test_a_form_from_an_ended_session_asks_for_a_login(app, client, auth):
    auth.login()
    token = auth.csrf_token()
    with app.app_context():
        db = get_db()
        db.execute(delete(UserSession))  # logged out elsewhere, say
        db.commit()
    response = client.post("/create", data={"title": "t", "body": "b", "csrf_token": token})
    assert response.headers["Location"] == "/auth/login"


@pytest.mark.parametrize("username", ["x" * 500, "nul\x00name", "a b"])
def test_login_with_a_name_nobody_can_have_is_a_plain_failure(app, auth, username):
    response = auth.login(username, "some password")
    assert response.status_code == 401
    assert flashes(response.get_data(as_text=True), "alert") == ["Incorrect username or password."]
    assert count_rows(app, LoginFailure) == 1


def test_guessing_through_the_password_form_is_throttled_too(client, auth):
    auth.login()
    for _ in range(5):
        response = auth.post(
            "/auth/password", {"current_password": "a guess", "new_password": "a brand new secret"}
        )
        assert response.status_code == 401
    response = auth.post(
        "/auth/password", {"current_password": PASSWORD, "new_password": "a brand new secret"}
    )
    assert response.status_code == 429


@pytest.mark.sqlite_only  # restore works on SQLite files
def test_a_restored_backup_brings_back_no_session(app, client, auth, project, runner):
    auth.login()
    cookie = client.get_cookie("session").value
    database = app.config["DATABASE_URL"].removeprefix("sqlite:///")
    env = {"BLOG_DATABASE_URL": app.config["DATABASE_URL"]}
    assert runner(project / "run.py", "init", env=env).returncode == 0  # backs it up
    restored = runner(project / "run.py", "restore", f"{database}.bak", env=env)
    assert restored.returncode == 0, restored.stderr
    assert count_rows(app, User) == 2
    assert count_rows(app, UserSession) == 0
    replay = app.test_client()
    replay.set_cookie("session", cookie)
    assert logged_in_as(replay) is None


def test_registrations_from_one_address_are_throttled_like_logins(app, client, auth):
    for n in range(20):
        response = auth.post(
            "/auth/register", {"username": f"user{n}", "password": "a fine password"}
        )
        assert response.status_code == 302
    refused = auth.post("/auth/register", {"username": "user20", "password": "a fine password"})
    assert refused.status_code == 429
    assert "Too many tries. Wait 15 minutes" in refused.get_data(as_text=True)
    assert count_rows(app, User) == 22
    # They share the address's budget with failed logins; elsewhere is not held up.
    assert auth.login().status_code == 429
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "127.0.0.2"
    assert AuthActions(elsewhere).login().status_code == 302


def test_a_taken_name_is_refused_before_any_password_is_hashed(app, auth, monkeypatch):
    def no_hashing(password):
        raise AssertionError("a password was hashed for a taken name")

    monkeypatch.setattr("blog.auth.generate_password_hash", no_hashing)
    response = auth.post("/auth/register", {"username": "TEST", "password": "a fine password"})
    assert response.status_code == 409
    assert "Username TEST is already taken." in flashes(response.get_data(as_text=True), "alert")


def client_from(app, address):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def test_a_browser_that_logged_in_before_is_never_locked_out_by_guesses(app):
    owner = AuthActions(client_from(app, "127.5.0.2"))
    assert owner.login().status_code == 302  # the browser now holds a device cookie
    owner.logout()
    attacker = AuthActions(client_from(app, "127.5.0.1"))
    for _ in range(5):
        assert attacker.login("test", "a wrong guess").status_code == 401
    assert attacker.login().status_code == 429  # the right password, from the guesser
    # Another browser, never logged in to test, meets the limit; a forged cookie changes nothing.
    stranger = client_from(app, "127.5.0.3")
    assert AuthActions(stranger).login().status_code == 429
    stranger.set_cookie("device", "forged")
    assert AuthActions(stranger).login().status_code == 429
    assert owner.login().status_code == 302


def test_guesses_from_a_known_browser_still_meet_the_limit(app):
    known = AuthActions(client_from(app, "127.5.0.2"))
    assert known.login().status_code == 302
    for _ in range(5):
        assert known.login("test", "a wrong guess").status_code == 401
    assert known.login().status_code == 429


def test_the_try_before_the_limit_warns_that_one_more_failure_locks(auth):
    for n in range(1, 6):
        page = auth.login("test", "a wrong guess").get_data(as_text=True)
        warned = "One more failed try will stop logins from here for 15 minutes." in flashes(
            page, "alert"
        )
        assert warned == (n == 4), n
    assert auth.login().status_code == 429
