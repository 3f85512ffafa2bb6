"""Password guessing is throttled: per name, per address, for registrations too,
and across a real server's processes and threads."""

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import event, text, update

from blog.db import get_db
from blog.models import LoginFailure, User, utcnow

from .pages import PASSWORD, AuthActions, flashes
from .snapshot import count_rows
from .webclient import Browser


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


@pytest.mark.sqlite_only
def test_failed_logins_are_kept_in_the_database(app, auth, backend):
    auth.login("Nobody", "wrong password")
    with app.app_context():
        rows = get_db().execute(text("SELECT username_key, address FROM login_failure")).all()
    assert rows == [("nobody", "127.0.0.1")]


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


@pytest.mark.parametrize("limit", ["name", "address", "device"])
def test_the_try_before_the_limit_says_exactly_what_one_more_failure_does(app, limit):
    guesser = AuthActions(client_from(app, "127.6.0.1"))
    if limit == "device":
        assert guesser.login().status_code == 302  # this browser is known for test
        guesser.logout()
    tries = 20 if limit == "address" else 5
    names = [f"nobody{n}" for n in range(tries)] if limit == "address" else ["test"] * tries
    warnings = []
    for n, name in enumerate(names, start=1):
        page = guesser.login(name, "a wrong guess").get_data(as_text=True)
        warnings += [(n, text) for text in flashes(page, "alert") if text.startswith("One more")]
    expected = {
        "name": "One more wrong password and logins to test will be refused for up to 15 "
        "minutes, except from browsers that have logged in to it before.",
        "address": "One more failed login and every login from this address will be refused "
        "for up to 15 minutes.",
        "device": "One more wrong password and this browser's logins to test will be refused "
        "for up to 15 minutes.",
    }[limit]
    assert warnings == [(tries - 1, expected)]
    # And that is what happens.
    assert guesser.login().status_code == 429
    other = AuthActions(client_from(app, "127.6.0.1" if limit != "address" else "127.6.0.2"))
    assert other.login("other").status_code == 302
    if limit == "address":
        assert AuthActions(client_from(app, "127.6.0.1")).login("other").status_code == 429
    elif limit == "device":
        assert AuthActions(client_from(app, "127.6.0.3")).login().status_code == 302
    else:
        assert AuthActions(client_from(app, "127.6.0.3")).login().status_code == 429


def test_failed_logins_are_counted_across_processes_and_threads(serve):
    base_url = serve("--workers", "2", "--threads", "4")
    assert Browser(base_url).sign_up("alice")
    guessers = [Browser(base_url) for _ in range(12)]
    for guesser in guessers:
        guesser.open_form("/auth/login")

    def guess(guesser: Browser) -> tuple[int, str | None]:
        status, headers, _ = guesser.request(
            "/auth/login", {"username": "alice", "password": "a wrong guess"}
        )
        return status, headers["Retry-After"]

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(guess, guessers))
    assert sorted(status for status, _ in answers) == [401] * 5 + [429] * 7
    assert all(0 < int(retry) <= 900 for status, retry in answers if status == 429)

    status, _, page = guessers[0].request(
        "/auth/login", {"username": "alice", "password": PASSWORD}
    )
    assert status == 429 and "Too many tries. Wait 15 minutes, then try again." in page


@pytest.fixture
def writes(app):
    """The statements that change something, and the commits, that the blog sends from now on."""
    sent: list[str] = []

    def statement(connection, cursor, sql, *args):
        if sql.split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            sent.append(sql)

    engine = app.extensions["db_engine"]
    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", lambda connection: sent.append("COMMIT"))
    return sent


@pytest.mark.parametrize("refused", ["login", "registration"])
def test_a_try_refused_by_the_throttle_writes_nothing(app, auth, writes, refused):
    for n in range(20):
        assert auth.login(f"nobody{n}", "wrong password").status_code == 401
    writes.clear()
    if refused == "login":
        response = auth.login("test", PASSWORD)
    else:
        response = auth.post("/auth/register", {"username": "new", "password": "a fine password"})
    assert response.status_code == 429
    assert writes == []


def test_a_password_change_ends_every_browsers_standing_as_a_known_device(app):
    owner = AuthActions(client_from(app, "127.5.0.2"))
    assert owner.login().status_code == 302  # this browser is known for the account
    owner.logout()
    # The password is changed elsewhere (its owner's other browser, or whoever took it over).
    elsewhere = AuthActions(client_from(app, "127.5.0.4"))
    assert elsewhere.login().status_code == 302
    changed = elsewhere.post(
        "/auth/password", {"current_password": PASSWORD, "new_password": "a brand new secret"}
    )
    assert changed.status_code == 302
    attacker = AuthActions(client_from(app, "127.5.0.1"))
    for _ in range(5):
        assert attacker.login("test", "a wrong guess").status_code == 401
    # The old device cookie no longer counts: this browser meets the name's limit too.
    assert owner.login("test", "a brand new secret").status_code == 429
