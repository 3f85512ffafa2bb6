"""Session cookies against a real `python run.py`: saved, then replayed."""

import contextlib
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from .server import serving
from .webclient import Browser

PASSWORD = "a long pass phrase"


@pytest.fixture
def serve(project, runner):
    """Start `python run.py` on a new blog.db with the given settings; its base URL."""
    with contextlib.ExitStack() as servers:

        def start(*options, **settings):
            assert runner(project / "run.py", "init").returncode == 0
            command = [sys.executable, project / "run.py", *options, "--port"]
            return servers.enter_context(serving(command, project / "server.log", settings))

        yield start


def logged_in(base_url: str, username: str, password: str = PASSWORD) -> Browser:
    browser = Browser(base_url)
    browser.open_form("/auth/register")
    browser.request("/auth/register", {"username": username, "password": password})
    browser.open_form("/auth/login")
    status, _, _ = browser.request("/auth/login", {"username": username, "password": password})
    assert status == 302
    assert who(browser) == username
    return browser


def who(browser: Browser) -> str | None:
    """The name in the page's menu, or None when it offers to log in."""
    page = browser.request("/")[2]
    if "Log out" not in page:
        return None
    return page.split('class="user"')[1].split(">")[1].split("<")[0]


def saved_cookie(browser: Browser) -> str:
    (cookie,) = [c for c in browser.cookies if c.name == "session"]
    return cookie.value


def replayed(base_url: str, cookie: str) -> str | None:
    """Who the blog takes a request carrying this saved cookie for."""
    stranger = Browser(base_url)
    stranger.opener.addheaders = [("Cookie", f"session={cookie}")]
    return who(stranger)


def test_a_cookie_saved_before_logout_is_dead_after_it(serve):
    base_url = serve()
    alice = logged_in(base_url, "alice")
    cookie = saved_cookie(alice)
    assert replayed(base_url, cookie) == "alice"

    alice.open_form("/")
    alice.request("/auth/logout", {})
    assert who(alice) is None
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
    phone.request("/auth/login", {"username": "alice", "password": PASSWORD})
    stolen = saved_cookie(phone)

    laptop.open_form("/auth/password")
    status, _, _ = laptop.request(
        "/auth/password", {"current_password": PASSWORD, "new_password": "another pass phrase"}
    )
    assert status == 302
    assert who(laptop) == "alice"
    assert who(phone) is None
    assert replayed(base_url, stolen) is None


def test_sessions_end_when_idle_and_after_their_lifetime(serve):
    base_url = serve(BLOG_SESSION_IDLE_SECONDS="2", BLOG_SESSION_MAX_SECONDS="5")
    idle = saved_cookie(logged_in(base_url, "idle"))
    busy = logged_in(base_url, "busy")
    started = time.monotonic()
    while time.monotonic() - started < 4:
        assert who(busy) == "busy"  # every request renews the idle time...
        time.sleep(0.5)
    assert replayed(base_url, idle) is None  # 4 s without a request
    while time.monotonic() - started < 5.5:
        time.sleep(0.5)
        who(busy)
    assert who(busy) is None  # ...but not the lifetime


def test_failed_logins_are_counted_across_processes_and_threads(serve):
    base_url = serve("--workers", "2", "--threads", "4")
    logged_in(base_url, "alice")
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


@pytest.mark.parametrize("options", [[], ["--debug"]], ids=["granian", "debug"])
def test_the_server_names_no_version(serve, options):
    base_url = serve(*options)
    with urllib.request.urlopen(base_url + "/") as response:
        server = response.headers.get("Server", "")
        policy = response.headers["Content-Security-Policy"]
    assert not any(character.isdigit() for character in server)
    assert "unsafe-inline" not in policy
