"""The blog's connection to its database (db.py): busy or lasting errors, the
write lock, and a database file moved away under a running blog."""

import sqlite3
import time
from contextlib import closing

import pytest
from alembic import command
from sqlalchemy import create_engine, event, func, select, text

from blog.db import DatabaseFileMoved, get_db
from blog.models import Post
from database_safety import SQLITE_PRAGMAS, back_up, sqlite_path

from .snapshot import rows


@pytest.mark.sqlite_only  # PostgreSQL reports a missing column as a programming error
def test_database_mid_migration_gives_503_and_writes_nothing(app, client, auth, alembic_cfg):
    auth.login()
    token = auth.csrf_token()
    command.downgrade(alembic_cfg, "-1")  # the blog now expects tables and a column that are gone

    for response in (
        client.get("/"),
        client.post("/create", data={"title": "t", "body": "b", "csrf_token": token}),
    ):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert "The database is busy" in response.get_data(as_text=True)

    command.upgrade(alembic_cfg, "head")
    with app.app_context():
        assert get_db().scalar(select(func.count()).select_from(Post)) == 2
    assert client.get("/").status_code == 200


@pytest.mark.sqlite_only
def test_readers_are_served_while_another_connection_holds_the_write_lock(
    app, client, auth, database_url
):
    path = database_url.removeprefix("sqlite:///")
    with closing(sqlite3.connect(path, isolation_level=None)) as writer:
        assert writer.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO post (title, body, created) VALUES ('x', 'y', '2024-01-01')")
        started = time.monotonic()
        page = client.get("/")
        waited = time.monotonic() - started
        assert page.status_code == 200 and "test title" in page.get_data(as_text=True)
        assert waited < 1  # not the 5 s a writer would wait for the lock
        writer.execute("COMMIT")


@pytest.mark.sqlite_only
def test_a_post_that_waits_out_the_busy_timeout_is_told_to_retry(
    app, client, auth, database_url, monkeypatch
):
    auth.login()
    token = auth.csrf_token()
    # A lock held longer than the blog waits, in 0.1 s rather than its 5 s.
    monkeypatch.setattr(
        "database_safety.SQLITE_PRAGMAS", (*SQLITE_PRAGMAS, "PRAGMA busy_timeout = 100")
    )
    app.extensions["db_engine"].dispose()
    path = database_url.removeprefix("sqlite:///")
    with closing(sqlite3.connect(path, isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        response = client.post("/create", data={"title": "t", "body": "b", "csrf_token": token})
        waited = time.monotonic() - started
        writer.execute("ROLLBACK")
    assert waited >= 0.1  # it waited for the lock before it gave up
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "The database is busy" in response.get_data(as_text=True)
    with app.app_context():
        assert get_db().scalar(select(func.count()).select_from(Post)) == 2


@pytest.mark.sqlite_only
def test_login_checks_the_password_without_holding_the_write_lock(
    app, client, auth, database_url, monkeypatch
):
    path = database_url.removeprefix("sqlite:///")
    seen = []

    def check_password_hash(*args):
        # Another connection can write while the password is checked.
        with closing(sqlite3.connect(path, timeout=0)) as other, other:
            other.execute("UPDATE user SET created = created")
        seen.append(True)
        return True

    monkeypatch.setattr("blog.auth.check_password_hash", check_password_hash)
    assert auth.login().status_code == 302
    assert seen == [True]


@pytest.mark.only_on("mysql")
def test_text_the_database_cannot_store_is_a_400_not_busy(app, auth):
    # A table left in latin1 (the blog refuses to start on one; this app was made
    # without that check): the emoji cannot be stored, and no wait will change that.
    with app.app_context():
        get_db().execute(text("ALTER TABLE post CONVERT TO CHARACTER SET latin1"))
    auth.login()
    response = auth.post("/create", {"title": "Party 🎉", "body": "text"})
    assert response.status_code == 400
    assert "Retry-After" not in response.headers
    page = response.get_data(as_text=True)
    assert "cannot store" in page and "busy" not in page
    assert "Log out" in page  # an error page too shows who is logged in


@pytest.mark.sqlite_only
def test_a_new_post_takes_the_write_lock_once(app, auth):
    auth.login()
    statements = []

    def trace(dbapi_connection, connection_record, connection_proxy):
        # What SQLite itself runs, whoever sends it.
        dbapi_connection.set_trace_callback(statements.append)

    event.listen(app.extensions["db_engine"], "checkout", trace)
    response = auth.post("/create", {"title": "One lock", "body": "One transaction."})
    assert response.status_code == 302
    # Finding who is logged in reads; only the INSERT takes the write lock,
    # in the transaction that began with it.
    begins = [statement for statement in statements if statement.startswith("BEGIN")]
    assert begins.count("BEGIN IMMEDIATE") == 1, begins
    assert set(begins) == {"BEGIN DEFERRED", "BEGIN IMMEDIATE"}, begins
    insert = next(n for n, statement in enumerate(statements) if statement.startswith("INSERT"))
    assert [s for s in statements[:insert] if s.startswith("BEGIN")][-1] == "BEGIN IMMEDIATE"


@pytest.mark.sqlite_only
def test_a_request_under_way_as_the_file_goes_opens_nothing_in_its_place(app, database_url):
    path = sqlite_path(database_url)
    with app.test_request_context("/"):
        db = get_db()  # the file was there when the request began
        # Another request noticed the file gone and closed the pooled connections.
        app.extensions["db_engine"].dispose()
        path.unlink()
        with pytest.raises(DatabaseFileMoved):
            db.execute(select(Post))
    assert not path.exists()  # never an empty blog.db that looks like the blog's


@pytest.mark.sqlite_only
def test_a_page_that_reads_only_who_is_logged_in_refuses_a_replaced_file(
    client, auth, database_url
):
    auth.login()
    assert client.get("/create").status_code == 200  # a pooled connection to the file
    path = sqlite_path(database_url)
    back_up(path).replace(path)  # `mv blog.db.bak blog.db`: the login is in both
    response = client.get("/create")
    assert response.status_code == 503
    page = response.get_data(as_text=True)
    assert "removed or replaced while the blog was running" in page
    assert "New post" not in page


@pytest.mark.sqlite_only
def test_a_post_whose_file_is_replaced_before_its_commit_is_stored_nowhere(app, database_url):
    path = sqlite_path(database_url)
    replacement = back_up(path)
    kept = path.with_name("old.db")
    with app.test_request_context("/create", method="POST"):
        db = get_db()
        db.add(Post(title="Stored nowhere", body="Its file was replaced."))
        db.flush()  # written, holding the write lock, not yet committed
        kept.hardlink_to(path)  # the old file, to read after the blog lets it go
        replacement.replace(path)  # `mv blog.db.bak blog.db`
        with pytest.raises(DatabaseFileMoved):
            db.commit()
    app.extensions["db_engine"].dispose()
    for database in (kept, path):  # neither the old file nor the one now at the path
        titles = [post["title"] for post in rows(create_engine(f"sqlite:///{database}"))["post"]]
        assert "Stored nowhere" not in titles
