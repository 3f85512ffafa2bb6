"""The page cache: never older than the last commit of any process, and never
a page or a message meant for one reader shown to another."""

import sqlite3
import time
from contextlib import closing

import pytest
from sqlalchemy import event

from blog import create_app

from .pages import PASSWORD, flashes, logged_in_as
from .webclient import Browser

pytestmark = pytest.mark.sqlite_only  # nothing is cached on a database server


@pytest.fixture
def statements(app):
    """The SQL statements the blog runs, as it runs them."""
    seen: list[str] = []
    event.listen(
        app.extensions["db_engine"],
        "before_cursor_execute",
        lambda conn, cursor, statement, *args: seen.append(statement),
    )
    return seen


def commit_elsewhere(database_url: str, statement: str) -> None:
    """A commit by another program, as `alembic` or a second worker makes one."""
    with closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as other, other:
        other.execute(statement)


RETITLE = "UPDATE post SET title = 'Retitled elsewhere' WHERE id = {}"


@pytest.mark.parametrize(
    ("path", "statement", "then_shown"),
    [
        ("/", RETITLE.format(2), "Retitled elsewhere"),
        ("/?after=2", RETITLE.format(1), "Retitled elsewhere"),
        ("/post/2", RETITLE.format(2), "Retitled elsewhere"),
        ("/users/test", RETITLE.format(2), "Retitled elsewhere"),
        (
            "/users",
            "INSERT INTO user (username, password_hash, created)"
            " VALUES ('newcomer', 'x', '2022-01-01 00:00:00.000000')",
            "newcomer",
        ),
    ],
)
def test_an_anonymous_page_is_made_once_until_anything_commits(
    client, statements, database_url, path, statement, then_shown
):
    first = client.get(path).get_data(as_text=True)
    made = len(statements)
    assert made, "the first request reads the database"

    assert client.get(path).get_data(as_text=True) == first
    assert len(statements) == made  # the same page, without a query

    commit_elsewhere(database_url, statement)
    assert then_shown in client.get(path).get_data(as_text=True)


def test_a_logged_in_page_is_made_once_for_its_session_until_anything_commits(
    client, auth, statements, database_url
):
    auth.login()
    client.get("/")  # "Logged in as test.", shown once
    first = client.get("/").get_data(as_text=True)
    assert logged_in_as(first) == "test"
    made = len(statements)

    assert client.get("/").get_data(as_text=True) == first
    assert len(statements) == made  # neither the page nor who is logged in was read again

    commit_elsewhere(database_url, RETITLE.format(2))
    assert "Retitled elsewhere" in client.get("/").get_data(as_text=True)


def test_a_logged_in_page_from_the_cache_ends_with_its_session(app, client, auth):
    app.config["SESSION_MAX_SECONDS"] = 1
    auth.login()
    client.get("/")  # "Logged in as test.", shown once
    assert logged_in_as(client.get("/").get_data(as_text=True)) == "test"  # now kept
    time.sleep(1.1)
    assert logged_in_as(client.get("/").get_data(as_text=True)) is None


def test_a_cookie_kept_from_before_a_password_change_gets_no_logged_in_page(app, client, auth):
    auth.login()
    client.get("/users")  # "Logged in as test.", shown once
    copied = client.get_cookie("session").value
    response = auth.post(
        "/auth/password", {"current_password": PASSWORD, "new_password": "a brand new secret"}
    )
    assert response.status_code == 302
    client.get("/users")  # "Password changed. ...", shown once
    assert logged_in_as(client.get("/users").get_data(as_text=True)) == "test"  # now kept

    elsewhere = app.test_client()
    elsewhere.set_cookie("session", copied)
    assert logged_in_as(elsewhere.get("/users").get_data(as_text=True)) is None


def test_a_page_from_the_cache_is_sent_as_the_first_was(client):
    first = client.get("/")
    again = client.get("/")
    assert again.status == first.status == "200 OK"
    assert again.get_data() == first.get_data()
    assert sorted(again.headers.items()) == sorted(first.headers.items())
    assert again.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert again.headers["Cache-Control"] == "no-store"

    head = client.head("/")
    assert head.get_data() == b""
    assert head.headers["Content-Length"] == first.headers["Content-Length"]


def test_a_post_is_on_the_index_at_once(client, auth):
    assert "A new post" not in client.get("/").get_data(as_text=True)
    reader = client.application.test_client()
    assert "A new post" not in reader.get("/").get_data(as_text=True)

    auth.login()
    auth.post("/create", {"title": "A new post", "body": "Fresh."})

    assert "A new post" in reader.get("/").get_data(as_text=True)


def test_a_logged_in_page_is_never_shown_to_anyone_else(client, auth):
    reader = client.application.test_client()
    assert logged_in_as(reader.get("/").get_data(as_text=True)) != "test"

    auth.login()
    assert logged_in_as(client.get("/").get_data(as_text=True)) == "test"

    assert logged_in_as(reader.get("/").get_data(as_text=True)) != "test"
    assert logged_in_as(client.get("/").get_data(as_text=True)) == "test"


def test_a_message_for_one_reader_is_shown_once_and_to_them_alone(client, auth):
    reader = client.application.test_client()
    reader.get("/")  # the anonymous index, cached
    auth.login()
    auth.logout()  # "You are logged out.", on the next page only

    page = client.get("/").get_data(as_text=True)
    assert flashes(page, "status")
    assert not flashes(client.get("/").get_data(as_text=True), "status")
    assert not flashes(reader.get("/").get_data(as_text=True), "status")


def test_a_write_in_one_process_is_seen_by_the_next_read_in_another(served_blog, project):
    # Two workers, each with its cache: both have shown the index before.
    reader = Browser(served_blog)
    for _ in range(20):
        assert "Still there" not in reader.request("/")[2]

    writer = Browser(served_blog)
    writer.sign_up("scribe")
    status, _, _ = writer.request("/create", {"title": "Still there", "body": "Seen at once."})
    assert status == 302
    for _ in range(20):
        assert "Still there" in reader.request("/")[2]

    commit_elsewhere(f"sqlite:///{project / 'blog.db'}", "UPDATE post SET title = 'Retitled'")
    for _ in range(20):
        page = reader.request("/")[2]
        assert "Retitled" in page and "Still there" not in page


def cached_bytes(app) -> int:
    return sum(len(page.body) for page in app.extensions["page_cache"].pages.values())


def test_a_page_is_kept_once_whatever_the_host_or_unknown_parameters(app, client, statements):
    first = client.get("/post/1").get_data(as_text=True)
    made = len(statements)
    for n in range(200):
        query = f"i={n}&pad={'x' * 2000}"
        page = client.get(f"/post/1?{query}", headers={"Host": f"host{n}.example"})
        assert page.get_data(as_text=True) == first
    assert len(statements) == made  # each was the one page, from the cache
    assert len(app.extensions["page_cache"].pages) == 1


def test_the_cache_keeps_at_most_its_bytes(app, database_url, monkeypatch):
    monkeypatch.setenv("BLOG_PAGE_CACHE_BYTES", "3000")
    app = create_app({"DATABASE_URL": database_url, "SECRET_KEY": "test"})
    client = app.test_client()
    for path in ["/", "/users", "/users/test", "/post/1", "/post/2", "/?after=2"] * 3:
        assert client.get(path).status_code == 200
    assert 0 < cached_bytes(app) <= 3_000
