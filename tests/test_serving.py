"""The blog keeps serving readers and writers while its database is migrated,
backed up or recreated, and loses nothing it acknowledged."""

import contextlib
import gzip
import os
import shutil
import signal
import socket
import sqlite3
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine, text

from database_safety import back_up

from .blogs import add_filler_posts, init_blog
from .project import REVISIONS
from .server import server_process, serving
from .snapshot import titles, version
from .webclient import Browser

WRITERS = 4
READERS = 4
MAX_REQUESTS_PER_CLIENT = 2000


class Crowd:
    """Several users writing posts and several reading pages, as fast as they
    can until told to stop."""

    def __init__(self, base_url, readers=0):
        self.base_url = base_url
        self.stop = threading.Event()
        self.acknowledged = []  # (title, when)
        self.refused = []  # titles the blog answered as not stored
        self.responses = []  # (status, Retry-After) of the writes
        self.reads = []  # statuses of the reads
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.write, args=(n,)) for n in range(WRITERS)]
        self.threads += [threading.Thread(target=self.read) for _ in range(readers)]

    def write(self, n):
        browser = Browser(self.base_url)
        if not browser.sign_up(f"writer{n}", stop=self.stop):
            return
        for i in range(MAX_REQUESTS_PER_CLIENT):
            if self.stop.is_set():
                break
            title = f"writer{n} post {i}"
            status, headers, _ = browser.request("/create", {"title": title, "body": "text"})
            # The session or the account went with a migration or a recreated database.
            relogin = status == 302 and headers["Location"].endswith("/auth/login")
            if relogin and not browser.sign_up(f"writer{n}", stop=self.stop):
                return
            with self.lock:
                self.responses.append((status, headers.get("Retry-After")))
                if status == 302 and "/post/" in headers["Location"]:
                    self.acknowledged.append((title, time.monotonic()))
                else:
                    self.refused.append(title)

    def read(self):
        browser = Browser(self.base_url)
        for i in range(MAX_REQUESTS_PER_CLIENT):
            if self.stop.is_set():
                break
            status = browser.request("/" if i % 2 else "/users")[0]
            with self.lock:
                self.reads.append(status)

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


def stored_titles(database_url):
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return set(connection.scalars(text("SELECT title FROM post")))
    finally:
        engine.dispose()


def test_readers_and_writers_through_a_migration(served_blog, project, runner, blog_env):
    with Crowd(served_blog, readers=READERS) as crowd:
        crowd.wait_for_acknowledged(20)
        # Down to revision 1, through revision 2's rewrite of every post. The
        # writers' posts have authors: a database server drops them only if told to.
        go_ahead = [] if not blog_env else ["-x", "drop_data=yes"]
        # (A server may end the migration rather than a writer to break a
        # deadlock: the migration tries that revision again by itself.)
        for args in ([*go_ahead, "downgrade", REVISIONS[0].revision], ["upgrade", "head"]):
            result = runner("-m", "alembic", "-c", project / "alembic.ini", *args, env=blog_env)
            assert result.returncode == 0, result.stdout + result.stderr
        migrated = time.monotonic()
        crowd.wait_for_acknowledged(len(crowd.acknowledged) + 20)

    statuses = {status for status, _ in crowd.responses}
    assert statuses <= {302, 503}, statuses  # never a 500
    assert set(crowd.reads) <= {200, 503}, set(crowd.reads)
    assert crowd.reads.count(200) > 0
    assert all(retry_after == "1" for status, retry_after in crowd.responses if status == 503)
    assert any(when > migrated for _, when in crowd.acknowledged)
    stored = stored_titles(blog_env.get("BLOG_DATABASE_URL", f"sqlite:///{project / 'blog.db'}"))
    assert {title for title, _ in crowd.acknowledged} <= stored
    assert not stored & set(crowd.refused)  # a post that was stored was never answered as failed


@pytest.mark.sqlite_only
def test_backup_taken_while_serving_has_every_post(served_blog, project):
    with Crowd(served_blog) as writers:
        writers.wait_for_acknowledged(20)
        before_backup = {title for title, _ in writers.acknowledged}
        backup = back_up(project / "blog.db")
        writers.wait_for_acknowledged(len(before_backup) + 20)

    with sqlite3.connect(backup) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    in_backup = set(titles(backup))
    assert before_backup <= in_backup
    assert in_backup <= set(titles(project / "blog.db"))


def backups(project):
    return sorted(project.glob("blog.db.bak*"))


@pytest.mark.sqlite_only
def test_init_while_writers_post_loses_nothing(served_blog, project, runner):
    add_filler_posts(project / "blog.db", 100_000)
    with Crowd(served_blog) as crowd:
        for _ in range(3):
            crowd.wait_for_acknowledged(len(crowd.acknowledged) + 20)
            result = runner(project / "run.py", "init")
            assert result.returncode == 0, result.stderr

    assert {status for status, _ in crowd.responses} <= {302, 503}
    everywhere = set(titles(project / "blog.db"))
    for backup in backups(project):
        everywhere |= set(titles(backup))
    assert len(backups(project)) == 3
    assert {title for title, _ in crowd.acknowledged} <= everywhere
    assert not everywhere & set(crowd.refused)


@pytest.mark.sqlite_only
@pytest.mark.parametrize("delay", [0.1, 0.2, 0.3, 0.4])
def test_an_upgrade_racing_init_lands_in_the_backup_or_not_at_all(project, runner, delay):
    db = project / "blog.db"
    init_blog(project)
    add_filler_posts(db, 200_000)
    alembic = ["-m", "alembic", "-c", project / "alembic.ini"]
    assert runner(*alembic, "downgrade", "-1").returncode == 0
    for backup in backups(project):
        backup.unlink()

    with ThreadPoolExecutor(2) as pool:
        init = pool.submit(runner, project / "run.py", "init")
        time.sleep(delay)  # the upgrade starts while init is backing up, or just before
        upgrade = pool.submit(runner, *alembic, "upgrade", "head")
    upgrade, init = upgrade.result(), init.result()

    assert init.returncode == 0, init.stderr
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    [backup] = backups(project)
    assert len(titles(backup)) == 200_000
    # The upgrade either ran before init took the lock, and the backup has it,
    # or found the new database already at the latest revision.
    upgraded = "Running upgrade" in upgrade.stderr
    assert (version(backup) == [(REVISIONS[-1].revision,)]) == upgraded, upgrade.stderr


LOGIN = b"POST /auth/login HTTP/1.1\r\nHost: blog\r\n"


class SlowClients:
    """Connections that never finish their requests: COUNT that send one byte
    and stop, COUNT that send a header line every 2 s, COUNT that send a form's
    body at one byte a second, and 16 that send 1 byte of a 10-byte body and
    then nothing."""

    def __init__(self, base_url, count):
        host, port = base_url.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.count = count
        self.stop = threading.Event()
        self.sockets = []
        self.dripping = []  # (connection, what it still has to send)

    def open(self, start: bytes) -> socket.socket:
        connection = socket.create_connection(self.address)
        connection.sendall(start)
        self.sockets.append(connection)
        return connection

    def drip(self):
        while not self.stop.wait(1):
            for n, (connection, rest) in enumerate(self.dripping):
                if rest:
                    with contextlib.suppress(OSError):
                        connection.sendall(rest[:1])
                    self.dripping[n] = (connection, rest[1:])

    def __enter__(self):
        login = LOGIN + b"Content-Type: application/x-www-form-urlencoded\r\n"
        for _ in range(self.count):
            self.open(b"G")
            self.dripping.append(
                (self.open(b"GET / HTTP/1.1\r\nHost: blog\r\n"), b"X: y\r\n" * 1000)
            )
            body = b"username=someone&password=" + b"x" * 9000
            started = self.open(login + b"Content-Length: %d\r\n\r\n" % len(body))
            self.dripping.append((started, body))
        for _ in range(16):
            self.open(login + b"Content-Length: 10\r\n\r\nu")
        threading.Thread(target=self.drip, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for connection in self.sockets:
            connection.close()


@pytest.mark.sqlite_only
def test_slow_clients_cannot_stop_the_blog(served_blog):
    with SlowClients(served_blog, 200):
        time.sleep(2)  # every slow request has reached the server
        answered = []
        for _ in range(20):
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(served_blog + "/", timeout=1) as response,
            ):
                answered.append(response.status)
            time.sleep(0.2)
    assert answered == [200] * 20


@pytest.mark.sqlite_only
@pytest.mark.parametrize("move", ["rm", "rm with -wal and -shm", "mv a backup over it"])
def test_a_database_file_moved_under_the_blog_takes_no_more_posts(
    served_blog, project, runner, move
):
    path = project / "blog.db"
    backup = back_up(path)
    with Crowd(served_blog, readers=2) as crowd:
        crowd.wait_for_acknowledged(20)
        if move == "mv a backup over it":
            backup.rename(path)
        else:
            path.unlink()
        if move == "rm with -wal and -shm":
            for leftover in (project / "blog.db-wal", project / "blog.db-shm"):
                leftover.unlink()
        moved = time.monotonic()
        time.sleep(3)
        status, _, page = Browser(served_blog).request("/")

    # Nothing acknowledged once the file was gone went to a file that has no name.
    acknowledged_after = {title for title, when in crowd.acknowledged if when > moved + 0.5}
    assert acknowledged_after <= (set(titles(path)) if path.exists() else set())
    assert not acknowledged_after
    assert status == 503
    assert "removed or replaced while the blog was running" in page
    assert "restart" in page
    log = (project / "server.log").read_text()
    assert "ERROR" in log and "no longer the file the blog opened" in log


@pytest.mark.sqlite_only
def test_after_a_restart_the_blog_serves_the_file_at_its_path_whole(project):
    init_blog(project)
    path = project / "blog.db"
    command = [sys.executable, project / "run.py", "--port"]
    with serving(command, project / "server.log") as base_url, Crowd(base_url) as crowd:
        crowd.wait_for_acknowledged(20)
        backup = back_up(path)
        in_backup = set(titles(backup))
        crowd.wait_for_acknowledged(len(crowd.acknowledged) + 20)
        backup.rename(path)
        time.sleep(2)

    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # Exactly the backup: no worker's post, acknowledged or refused, reached it.
    assert set(titles(path)) == in_backup
    with serving(command, project / "server.log") as base_url:
        status, _, page = Browser(base_url).request("/")
    assert status == 200
    assert any(title in page for title in in_backup)


# What a client speaking HTTP/2 without TLS sends first ("prior knowledge"):
# the connection preface, then an empty SETTINGS frame.
H2C_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


@pytest.mark.sqlite_only
def test_the_blog_speaks_http_1_1_only(served_blog):
    host, port = served_blog.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(H2C_PREFACE)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := connection.recv(4096):
                answer += chunk
    # An HTTP/2 server answers with a SETTINGS frame (type 4 in its fourth byte).
    assert not (len(answer) >= 4 and answer[3] == 4), answer[:40]
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:40]


# Each way the blog is stopped: Ctrl+C in its terminal (SIGINT to the whole
# group, `make run` included) and a service manager's SIGTERM to the server alone.
STOPS = {
    "Ctrl+C": lambda pid: os.killpg(pid, signal.SIGINT),
    "SIGTERM to the server": lambda pid: os.kill(pid, signal.SIGTERM),
}


@pytest.mark.sqlite_only
@pytest.mark.parametrize("stop", STOPS)
def test_a_stopped_blog_is_one_whole_file(project, tmp_path, stop):
    init_blog(project)
    command = [sys.executable, project / "run.py", "--port"]
    with server_process(command, project / "server.log", stop=STOPS[stop]) as (base_url, _):
        browser = Browser(base_url)
        assert browser.sign_up("author")
        for n in range(5):
            assert browser.request("/create", {"title": f"post {n}", "body": "text"})[0] == 302

    assert "shutdown completed" in (project / "server.log").read_text()
    assert not (project / "blog.db-wal").exists()
    assert not (project / "blog.db-shm").exists()
    # blog.db read alone, as `cp blog.db` or `mv blog.db` would take it.
    alone = tmp_path / "alone.db"
    shutil.copy(project / "blog.db", alone)
    assert set(titles(alone)) == {f"post {n}" for n in range(5)}


def workers_of(pid: int) -> list[int]:
    """The processes a server process started (Linux's /proc)."""
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(child) for child in children.read().split()]


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # Ended but not yet reaped by its parent: it serves nothing.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.sqlite_only
def test_a_worker_that_dies_is_replaced(project):
    init_blog(project)
    command = [sys.executable, project / "run.py", "--workers", "2", "--port"]
    with server_process(command, project / "server.log") as (base_url, server):
        browser = Browser(base_url)
        assert browser.sign_up("author")
        assert browser.request("/create", {"title": "before", "body": "text"})[0] == 302
        first, second = workers_of(server)
        os.kill(first, signal.SIGKILL)
        killed = time.monotonic()
        answered = []
        while time.monotonic() < killed + 2:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(base_url + "/", timeout=1) as response,
            ):
                answered.append(response.status)
            time.sleep(0.1)
        time.sleep(4)  # granian starts a new worker, and the blog has two again
        workers = workers_of(server)
        assert browser.request("/create", {"title": "after", "body": "text"})[0] == 302

    assert answered and set(answered) == {200}, answered
    assert second in workers and first not in workers and len(workers) == 2, workers
    assert set(titles(project / "blog.db")) == {"before", "after"}


@pytest.mark.sqlite_only
def test_the_workers_stop_with_the_server(project):
    init_blog(project)
    command = [sys.executable, project / "run.py", "--workers", "2", "--port"]
    killed = lambda pid: os.kill(pid, signal.SIGKILL)  # noqa: E731
    with server_process(command, project / "server.log", stop=killed) as (base_url, server):
        workers = workers_of(server)
    deadline = time.monotonic() + 5
    while any(map(is_running, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(is_running, workers))
    with pytest.raises(OSError):  # nothing answers on the port any more
        urllib.request.urlopen(base_url + "/", timeout=1)


def raw_request(base_url: str, request: bytes, seconds: float) -> tuple[bytes, float]:
    """What the server answers to request, sent as it is, and how long it took."""
    host, port = base_url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=seconds) as connection:
        connection.sendall(request)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := connection.recv(4096):
                answer += chunk
    return answer, time.monotonic() - started


@pytest.mark.sqlite_only
def test_a_body_that_stops_arriving_is_answered_408_and_closed(served_blog):
    answer, took = raw_request(served_blog, LOGIN + b"Content-Length: 10\r\n\r\nu", 30)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"did not arrive within 10 s" in answer
    assert 9 < took < 15


@pytest.mark.sqlite_only
def test_a_body_declared_too_large_is_refused_unread(served_blog):
    answer, took = raw_request(served_blog, LOGIN + b"Content-Length: 99999999\r\n\r\n", 10)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert took < 2


def fetched(url: str, accept_encoding: str | None):
    """The response's headers (found in any case) and body, as sent."""
    request = urllib.request.Request(url)
    if accept_encoding:
        request.add_header("Accept-Encoding", accept_encoding)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers, response.read()


@pytest.mark.sqlite_only
@pytest.mark.parametrize("path", ["/", "/users", "/static/style.css"])
def test_pages_and_styles_are_sent_compressed_to_clients_that_accept_it(served_blog, path):
    plain_headers, plain = fetched(served_blog + path, None)
    for _ in range(2):  # made, then (for an anonymous page) from the cache
        headers, sent = fetched(served_blog + path, "gzip, deflate, br")
        assert headers["Content-Encoding"] == "gzip"
        assert "Accept-Encoding" in headers["Vary"]
        assert int(headers["Content-Length"]) == len(sent) < len(plain)
        assert gzip.decompress(sent) == plain
    assert "Content-Encoding" not in plain_headers
    _, refused = fetched(served_blog + path, "gzip;q=0, identity")
    assert refused == plain
