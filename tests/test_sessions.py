"""Sessions: how a login lasts and ends, through the test client, and saved
cookies replayed against a real `python run.py`."""

import time
from datetime import timedelta

import pytest
from sqlalchemy import delete, text, update
from werkzeug.security import generate_password_hash

from blog import create_app
from blog.db import get_db
from blog.models import Post, User, UserSession, utcnow

from .pages import PASSWORD, AuthActions, flashes, logged_in_as
from .snapshot import count_rows
from .webclient import SIGN_UP_PASSWORD, Browser


def logged_in(base_url: str, username: str) -> Browser:
    browser = Browser(base_url)
    assert browser.sign_up(username)
    assert logged_in_as(browser.request("/")[2]) == username
    return browser


def saved_cookie(browser: Browser) -> str:
    (cookie,) = [c for c in browser.cookies if c.name == "session"]
    return cookie.value


def replayed(base_url: str, cookie: str) -> str | None:
    """Who the blog takes a request carrying this saved cookie for."""
    stranger = Browser(base_url)
    stranger.opener.addheaders = [("Cookie", f"session={cookie}")]
    return logged_in_as(stranger.request("/")[2])


def test_a_cookie_saved_before_logout_is_dead_after_it(serve):
    base_url = serve()
    alice = logged_in(base_url, "alice")
    cookie = saved_cookie(alice)
    assert replayed(base_url, cookie) == "alice"

    alice.open_form("/")
    alice.request("/auth/logout", {})
    assert logged_in_as(alice.request("/")[2]) is None
    assert replayed(base_url, cookie) is None


def test_a_cookie_saved_before_init_logs_in_nobody_after_it(serve, project, runner):
    base_url = serve()
    cookie = saved_cookie(logged_in(base_url, "alice"))
    assert runner(project / "run.py", "init").returncode == 0
    logged_in(base_url, "bob")  # the first account of the new database: alice's old id
    assert replayed(base_url, cookie) is None


def test_changing_the_password_logs_out_every_other_browser(serve):
    base_url = serve()
    laptop = logged_in(base_url, "alice")
    phone = Browser(base_url)
    phone.open_form("/auth/login")
    phone.request("/auth/login", {"username": "alice", "password": SIGN_UP_PASSWORD})
    stolen = saved_cookie(phone)

    laptop.open_form("/auth/password")
    status, _, _ = laptop.request(
        "/auth/password",
        {"current_password": SIGN_UP_PASSWORD, "new_password": "another pass phrase"},
    )
    assert status == 302
    assert logged_in_as(laptop.request("/")[2]) == "alice"
    assert logged_in_as(phone.request("/")[2]) is None
    assert replayed(base_url, stolen) is None


def test_sessions_end_when_idle_and_after_their_lifetime(serve):
    base_url = serve(BLOG_SESSION_IDLE_SECONDS="2", BLOG_SESSION_MAX_SECONDS="5")
    idle = saved_cookie(logged_in(base_url, "idle"))
    busy = logged_in(base_url, "busy")
    started = time.monotonic()
    while time.monotonic() - started < 4:
        assert logged_in_as(busy.request("/")[2]) == "busy"  # every request renews the idle time...
        time.sleep(0.5)
    assert replayed(base_url, idle) is None  # 4 s without a request
    while time.monotonic() - started < 5.5:
        time.sleep(0.5)
        logged_in_as(busy.request("/")[2])
    assert logged_in_as(busy.request("/")[2]) is None  # ...but not the lifetime


def test_a_cookie_is_refused_once_its_account_is_gone(app, client, auth):
    auth.login()
    with app.app_context():
        db = get_db()
        db.execute(update(Post).where(Post.author_id == 1).values(author_id=None))
        db.execute(delete(User).where(User.id == 1))
        db.commit()
        assert db.scalar(text("SELECT count(*) FROM user_session")) == 0
    assert logged_in_as(client.get("/").get_data(as_text=True)) is None


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
    assert logged_in_as(client.get("/").get_data(as_text=True)) is None


def test_sessions_end_after_their_lifetime(app, client, auth):
    auth.login()
    with app.app_context():
        db = get_db()
        lifetime = timedelta(seconds=app.config["SESSION_MAX_SECONDS"])
        db.execute(update(UserSession).values(created=utcnow() - lifetime))
        db.commit()
    assert logged_in_as(client.get("/").get_data(as_text=True)) is None


def test_the_cookie_is_signed_anew_once_a_tenth_of_the_idle_time_has_passed(app, client, auth):
    # Seconds, as SESSION_IDLE_SECONDS sets it: signed again after 2 s. The
    # cookie's time is in whole seconds, so it may look up to 1 s older.
    app.config["PERMANENT_SESSION_LIFETIME"] = 20
    auth.login()
    client.get("/")  # "Logged in as test.", shown once: the session changes
    assert "Set-Cookie" not in client.get("/").headers  # signed just now
    time.sleep(2)
    renewed = client.get("/")
    assert renewed.headers["Set-Cookie"].startswith("session=")
    assert logged_in_as(renewed.get_data(as_text=True)) == "test"
    assert logged_in_as(client.get("/").get_data(as_text=True)) == "test"


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
    assert logged_in_as(page) == "test"
    assert logged_in_as(other.get("/").get_data(as_text=True)) is None
    assert count_rows(app, UserSession) == 1

    auth.logout()
    assert auth.login("test", PASSWORD).status_code == 401
    assert auth.login("test", "a brand new secret").status_code == 302


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


def test_a_form_from_an_ended_session_asks_for_a_login(app, client, auth):
    auth.login()
    token = auth.csrf_token()
    with app.app_context():
        db = get_db()
        db.execute(delete(UserSession))  # logged out elsewhere, say
        db.commit()
    response = client.post("/create", data={"title": "t", "body": "b", "csrf_token": token})
    assert response.headers["Location"] == "/auth/login"


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
    assert logged_in_as(replay.get("/").get_data(as_text=True)) is None


def test_session_cookie_is_httponly_and_samesite_lax(client, auth):
    response = auth.login()
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


def set_cookies(response) -> dict[str, str]:
    """Each cookie the response sets, by name: its whole Set-Cookie line."""
    return {line.split("=", 1)[0]: line for line in response.headers.getlist("Set-Cookie")}


@pytest.mark.parametrize(
    ("scheme", "names", "secure"),
    [("https", {"__Host-session", "__Host-device"}, True), ("http", {"session", "device"}, False)],
)
def test_cookies_over_https_are_secure_and_host_only(app, monkeypatch, scheme, names, secure):
    monkeypatch.delenv("BLOG_SECURE_COOKIES", raising=False)
    app.config["PREFERRED_URL_SCHEME"] = scheme  # the test client's requests come over it
    client = app.test_client()
    auth = AuthActions(client)
    cookies = set_cookies(auth.login())
    assert set(cookies) == names
    for line in cookies.values():
        assert ("; Secure" in line) is secure
        assert "Path=/" in line and "Domain" not in line
    # The cookie it set logs the browser in over the same scheme.
    assert logged_in_as(client.get("/").get_data(as_text=True)) == "test"
