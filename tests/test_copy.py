"""python run.py copy: moving a blog's users and posts to another database."""

import sqlite3
from contextlib import closing
from datetime import datetime

import pytest
from sqlalchemy import create_engine, insert, inspect, make_url, select, update

from blog import create_app
from blog.copying import verify
from blog.db import get_db
from blog.maintenance import init_db, migration_scripts
from blog.models import Post, User
from database_safety import DatabaseProblem

from .blogs import make_legacy_blog
from .pages import PASSWORD_HASH
from .snapshot import rows


@pytest.fixture
def source_url(tmp_path):
    """A SQLite blog at the latest revision with users, authored and ownerless posts."""
    url = f"sqlite:///{tmp_path / 'source.db'}"
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "test", "CHECK_DATABASE": False})
    init_db(app.extensions["db_engine"], migration_scripts(app))
    with app.app_context():
        db = get_db()
        db.execute(
            insert(User),
            [
                {
                    "id": n,
                    "username": f"user{n}",
                    "password_hash": PASSWORD_HASH,
                    "created": datetime(2021, 1, 1, 0, 0, n),
                }
                for n in (1, 2, 5)
            ],
        )
        db.execute(
            insert(Post),
            [
                {
                    "id": n * 2,
                    "title": f"Post {n} ✓",
                    "body": "text " * n,
                    "author_id": (None, 1, 2, 5)[n % 4],
                    "created": datetime(2022, 1, 1, 0, 0, n % 60),
                }
                for n in range(1, 2501)
            ],
        )
        db.commit()
    app.extensions["db_engine"].dispose()
    return url


def blog_rows(url):
    engine = create_engine(url)
    try:
        found = rows(engine)
    finally:
        engine.dispose()
    return {table: found[table] for table in ("user", "post")}


def test_copy_keeps_every_row_and_id(project, runner, source_url, database_url, tmp_path):
    result = runner(project / "run.py", "copy", source_url, database_url)

    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "user: copied 3 of 3",
        "post: copied 1,000 of 2,500",
        "post: copied 2,000 of 2,500",
        "post: copied 2,500 of 2,500",
    ]
    assert result.stdout == (
        f"Copied 3 users and 2,500 posts from {source_url} to {database_url}, and verified them:"
        " the same row count and checksum in each table\n"
    )
    assert blog_rows(database_url) == blog_rows(source_url)
    assert not list(tmp_path.glob("*.bak*"))  # a new target needs no backup

    # New rows continue after the copied ids.
    app = create_app({"DATABASE_URL": database_url, "SECRET_KEY": "test"})
    with app.app_context():
        db = get_db()
        db.add(User(username="newcomer", password_hash=PASSWORD_HASH))
        db.add(Post(title="After the move", body="b", author_id=5))
        db.commit()
        assert db.scalar(select(User.id).where(User.username == "newcomer")) == 6
        assert db.scalar(select(Post.id).where(Post.title == "After the move")) == 5001
    app.extensions["db_engine"].dispose()


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_copy_refuses_a_target_with_posts(project, runner, source_url, database_url, dry_run):
    assert runner(project / "run.py", "copy", source_url, database_url).returncode == 0
    before = blog_rows(database_url)
    result = runner(project / "run.py", "copy", *dry_run, source_url, database_url)
    assert result.returncode == 1
    assert result.stderr == (
        "error: the target already has rows in user; copy into an empty database\n"
    )
    assert blog_rows(database_url) == before


@pytest.mark.sqlite_only
def test_copy_refuses_a_source_behind_the_latest_revision(project, runner, tmp_path):
    make_legacy_blog(tmp_path / "old.db")
    target = tmp_path / "new.db"
    result = runner(
        project / "run.py", "copy", f"sqlite:///{tmp_path / 'old.db'}", f"sqlite:///{target}"
    )
    assert result.returncode == 1
    assert "run `alembic upgrade head`" in result.stderr
    assert not target.exists()


@pytest.mark.sqlite_only
def test_copy_hides_passwords_in_errors(project, runner, source_url):
    result = runner(
        project / "run.py",
        "copy",
        source_url,
        "postgresql+psycopg://someone:s3cret@127.0.0.1:1/blog",
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr


@pytest.mark.parametrize(
    "target",
    [
        # Refused: nothing listens on port 1.
        "postgresql+psycopg://blog:hunter2@127.0.0.1:1/blog?password=hunter2",
        "mysql+pymysql://blog@127.0.0.1:1/blog?passwd=hunter2&charset=utf8mb4",
    ],
)
def test_copy_never_prints_a_password(project, runner, source_url, target):
    result = runner(project / "run.py", "copy", source_url, target)
    assert result.returncode == 1
    assert "127.0.0.1:1/blog" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


def test_copy_never_prints_a_password_when_it_works(project, runner, source_url, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("only PostgreSQL's driver takes ?password= beside trust authentication")
    with_password = make_url(database_url).update_query_dict({"password": "hunter2"})
    result = runner(
        project / "run.py", "copy", source_url, with_password.render_as_string(hide_password=False)
    )
    assert result.returncode == 0, result.stderr
    assert f"to {database_url}, and verified them" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr


# Rows an old blog.db can hold, SQLite enforcing neither lengths nor types, and
# foreign keys only when asked; written the way any SQLite client could.
UNSTORABLE_ROWS = [
    "INSERT INTO user (id, username, password_hash, created) VALUES"
    " (7, 'Émile', 'x', '2021-01-01 00:00:00.000000'),"
    " (8, 'émile', 'x', '2021-01-01 00:00:00.000000'),"
    " (2147483648, 'far', 'x', '2021-01-01 00:00:00.000000')",
    "INSERT INTO post (id, title, body, created) VALUES"
    f" (9001, '{'x' * 300}', 'b', '2022-01-01 00:00:00.000000'),"
    " (9002, 'NUL', 'a' || char(0) || 'b', '2022-01-01 00:00:00.000000'),"
    " (9003, CAST(X'48656C6CFF6F' AS TEXT), 'b', '2022-01-01 00:00:00.000000'),"
    " (9004, 'Far ahead', 'b', '12345-01-01 00:00:00'),"
    f" (9005, 'Long', '{'é' * 35_000}', '2022-01-01 00:00:00.000000')",
    "INSERT INTO post (id, title, body, created, author_id) VALUES"
    " (9006, 'Orphan', 'b', '2022-01-01 00:00:00.000000', 99)",
]

# What each target cannot store of them.
REFUSED = {
    "user 8 username: 'émile' differs only in case from user 7's 'Émile'": {"postgresql", "mysql"},
    "user 2147483648 id: 2,147,483,648 is beyond {name}'s INTEGER"
    " (-2,147,483,648 to 2,147,483,647)": {"postgresql", "mysql"},
    "post 9001 title: 300 characters long; the limit is 200": {"postgresql", "mysql"},
    "post 9002 body: holds a NUL character, which PostgreSQL cannot store in text": {"postgresql"},
    "post 9003 title: not valid UTF-8 (byte 0xff at byte 4)": {"sqlite", "postgresql", "mysql"},
    "post 9004 created: '12345-01-01 00:00:00' is not a date and time of years 1 to 9999": {
        "sqlite",
        "postgresql",
        "mysql",
    },
    "post 9005 body: 70,000 bytes in UTF-8; MariaDB's TEXT holds 65,535": {"mysql"},
    "post 9006 author_id: names user 99, which does not exist": {"sqlite", "postgresql", "mysql"},
}
NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mysql": "MariaDB"}


def write_unstorable_rows(url):
    with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection, connection:
        for statement in UNSTORABLE_ROWS:
            connection.execute(statement)


def untouched(database_url):
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return inspect(connection).get_table_names() == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_copy_lists_every_value_the_target_cannot_store(
    project, runner, source_url, database_url, backend, tmp_path, dry_run
):
    write_unstorable_rows(source_url)

    result = runner(project / "run.py", "copy", *dry_run, source_url, database_url)

    name = NAMES[backend]
    refused = [line.format(name=name) for line, where in REFUSED.items() if backend in where]
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {len(refused)} values in {source_url} cannot be stored in {name}; nothing was"
        " copied. Correct them in the source, then copy again:",
        *(f"  {line}" for line in refused),
    ]
    assert result.stdout == ""
    if backend == "sqlite":
        assert not (tmp_path / "blog.db").exists()
    else:
        assert untouched(database_url)


def test_a_dry_run_checks_and_writes_nothing(project, runner, source_url, database_url, tmp_path):
    result = runner(project / "run.py", "copy", "--dry-run", source_url, database_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Every user and post of {source_url} can be copied to {database_url}\n"
    assert result.stderr == ""
    if database_url.startswith("sqlite"):
        assert not (tmp_path / "blog.db").exists()
    else:
        assert untouched(database_url)


def test_times_are_verified_to_the_precision_the_target_keeps(
    project, runner, source_url, database_url
):
    # A post written by the blog has microseconds; MariaDB's DATETIME keeps seconds.
    engine = create_engine(source_url)
    with engine.begin() as connection:
        connection.execute(update(Post).values(created=datetime(2022, 1, 1, 0, 0, 0, 999_999)))
    engine.dispose()

    result = runner(project / "run.py", "copy", source_url, database_url)

    assert result.returncode == 0, result.stderr
    assert "and verified them" in result.stdout


def test_verification_finds_a_target_that_differs(project, runner, source_url, database_url):
    assert runner(project / "run.py", "copy", source_url, database_url).returncode == 0
    source, target = create_engine(source_url), create_engine(database_url)
    with target.begin() as connection:
        connection.execute(update(Post).where(Post.id == 4).values(title="Changed"))

    with pytest.raises(DatabaseProblem, match=r"^the copy of post differs from the source: "):
        verify(source, target, batch_size=1000)
    source.dispose()
    target.dispose()


@pytest.mark.sqlite_only
@pytest.mark.parametrize("dry_run", [True, False], ids=["--dry-run", "copy"])
@pytest.mark.parametrize("through_a_link", [False, True], ids=["file", "symlink"])
def test_copy_never_changes_its_source(
    project, runner, source_url, tmp_path, dry_run, through_a_link
):
    source = tmp_path / "source.db"
    with closing(sqlite3.connect(source)) as connection:
        connection.execute("PRAGMA journal_mode = DELETE")  # as an older blog.db may be
    source.chmod(0o644)
    before = source.read_bytes()
    named = source
    if through_a_link:
        named = tmp_path / "link.db"
        named.symlink_to(source)
    target = tmp_path / "target.db"
    options = ["--dry-run"] if dry_run else []
    result = runner(
        project / "run.py", "copy", *options, f"sqlite:///{named}", f"sqlite:///{target}"
    )
    assert result.returncode == 0, result.stderr
    assert source.read_bytes() == before
    assert oct(source.stat().st_mode & 0o777) == oct(0o644)
    assert sorted(path.name for path in tmp_path.glob("source.db*")) == ["source.db"]
