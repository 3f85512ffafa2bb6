"""The blog keeps serving writers while its database is migrated or backed up."""

import http.cookiejar
import re
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from blog.db import backup_database

from .test_run import free_port, titles, wait_for_page

WRITERS = 4
MAX_REQUESTS_PER_WRITER = 2000


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None


class Browser:
    """One user of the blog over HTTP: keeps its cookies and its forms' token."""

    def __init__(self, base_url):
        self.base_url = base_url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect())
        self.token = None

    def request(self, path, form=None):
        data = None
        if form is not None:
            data = urllib.parse.urlencode({"csrf_token": self.token, **form}).encode()
        try:
            with self.opener.open(self.base_url + path, data, timeout=30) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read().decode()

    def open_form(self, path):
        page = self.request(path)[2]
        self.token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    def sign_up(self, username):
        self.open_form("/auth/register")
        self.request("/auth/register", {"username": username, "password": "writer password"})
        self.request("/auth/login", {"username": username, "password": "writer password"})
        self.open_form("/create")


@pytest.fixture
def served_blog(project, runner):
    """The blog served by `python run.py` from a copy of the project."""
    assert runner(project / "run.py", "init").returncode == 0
    port = free_port()
    # A file, not a pipe: nobody reads the request log while the test runs.
    with open(project / "server.log", "w") as log:
        server = subprocess.Popen([sys.executable, project / "run.py", "--port", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_page(base_url + "/")
        yield base_url
    finally:
        server.terminate()
        server.wait(10)


class Writers:
    """Several users posting as fast as they can until told to stop."""

    def __init__(self, base_url):
        self.base_url = base_url
        self.stop = threading.Event()
        self.acknowledged = []  # (title, when)
        self.responses = []  # (status, Retry-After)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.write, args=(n,)) for n in range(WRITERS)]

    def write(self, n):
        browser = Browser(self.base_url)
        browser.sign_up(f"writer{n}")
        for i in range(MAX_REQUESTS_PER_WRITER):
            if self.stop.is_set():
                break
            title = f"writer{n} post {i}"
            status, headers, _ = browser.request("/create", {"title": title, "body": "text"})
            with self.lock:
                self.responses.append((status, headers.get("Retry-After")))
                if status == 302 and "/post/" in headers["Location"]:
                    self.acknowledged.append((title, time.monotonic()))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def wait_for_acknowledged(self, count, seconds=30):
        deadline = time.monotonic() + seconds
        while len(self.acknowledged) < count:
            assert time.monotonic() < deadline, "the blog acknowledged too few posts"
            time.sleep(0.05)

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def test_writers_keep_their_posts_through_a_migration(served_blog, project, runner):
    with Writers(served_blog) as writers:
        writers.wait_for_acknowledged(20)
        for args in (["downgrade", "-1"], ["upgrade", "head"]):
            result = runner("-m", "alembic", "-c", project / "alembic.ini", *args)
            assert result.returncode == 0, result.stderr
        migrated = time.monotonic()
        writers.wait_for_acknowledged(len(writers.acknowledged) + 20)

    statuses = {status for status, _ in writers.responses}
    assert statuses <= {302, 503}, statuses  # never a 500
    assert all(retry_after == "1" for status, retry_after in writers.responses
               if status == 503)
    assert any(when > migrated for _, when in writers.acknowledged)
    assert {title for title, _ in writers.acknowledged} <= set(titles(project / "blog.db"))


def test_backup_taken_while_serving_has_every_post(served_blog, project):
    with Writers(served_blog) as writers:
        writers.wait_for_acknowledged(20)
        before_backup = {title for title, _ in writers.acknowledged}
        backup = backup_database(project / "blog.db")
        writers.wait_for_acknowledged(len(before_backup) + 20)

    with sqlite3.connect(backup) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    in_backup = set(titles(backup))
    assert before_backup <= in_backup
    assert in_backup <= set(titles(project / "blog.db"))
