"""Backups: made before init, a downgrade or a restore, whole or not at all,
numbered and never overwritten, and readable by their owner alone; restore
takes back only a whole blog."""

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

import database_safety
from blog import create_app
from blog.maintenance import init_db, migration_scripts
from database_safety import DatabaseProblem, back_up

from .blogs import add_filler_posts, init_blog, make_legacy_blog, upgrade_blog
from .pages import AuthActions
from .project import PROJECT, REVISIONS, alembic
from .snapshot import current_revision, files_beside, rows, state, titles
from .webclient import Browser


@pytest.mark.sqlite_only
def test_backups_are_numbered_and_never_overwritten(app, tmp_path):
    path = tmp_path / "blog.db"
    first = back_up(path)
    second = back_up(path)
    assert (first.name, second.name) == ("blog.db.bak", "blog.db.bak.1")
    for backup in (first, second):
        with sqlite3.connect(backup) as connection:
            assert connection.execute("SELECT count(*) FROM post").fetchone() == (2,)


def test_init_backs_up_sqlite_but_never_drops_a_servers_tables(app, backend):
    engine = app.extensions["db_engine"]
    before = rows(engine)
    if backend == "sqlite":
        backup = init_db(engine, migration_scripts(app))
        assert rows(create_engine(f"sqlite:///{backup}"))["post"] == before["post"]
        assert rows(engine)["post"] == []
    else:
        with pytest.raises(
            DatabaseProblem,
            match=r"already has tables \(alembic_version, login_failure, post, user, "
            r"user_session\); drop them yourself after a backup",
        ):
            init_db(engine, migration_scripts(app))
        assert rows(engine) == before


def test_downgrade_backs_up_accounts_and_restore_brings_them_back(
    blog_with_accounts, project, runner
):
    db = blog_with_accounts
    engine = create_engine(f"sqlite:///{db}")
    before = rows(engine)

    result = alembic(runner, project, "downgrade", "base")
    assert result.returncode == 0, result.stderr
    backup = project / "blog.db.bak"
    assert (
        f"Backed up {db} to {backup}; `python run.py restore {backup}` puts it back"
        in result.stderr
    )
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert rows(create_engine(f"sqlite:///{backup}")) == before
    assert files_beside(db) == ["blog.db", "blog.db.bak"]  # one file, no -wal beside it

    assert alembic(runner, project, "upgrade", "head").returncode == 0
    assert rows(engine)["user"] == []  # the lesson's downgrade dropped them

    restored = runner(project / "run.py", "restore", backup)
    assert restored.returncode == 0, restored.stderr
    assert f"Backed up the current database to {backup}.1" in restored.stdout
    assert rows(engine) == before
    assert current_revision(engine) == REVISIONS[-1].revision

    client = create_app({"DATABASE_URL": f"sqlite:///{db}", "SECRET_KEY": "test"}).test_client()
    assert AuthActions(client).login("alice").status_code == 302
    assert "alice&#39;s post" in client.get("/users/alice").get_data(as_text=True)


def test_init_backup_keeps_the_databases_permissions(blog_with_accounts, project, runner):
    assert runner(project / "run.py", "init").returncode == 0
    assert stat.S_IMODE((project / "blog.db.bak").stat().st_mode) == 0o600


def a_copy_with(*statements):
    """Make other.db, a copy of the blog with something added or taken away."""

    def make(db):
        other = db.with_name("other.db")
        with closing(sqlite3.connect(db)) as source, closing(sqlite3.connect(other)) as copy:
            source.backup(copy)
            for statement in statements:
                copy.execute(statement)
            copy.commit()

    return make


def an_empty_file(db):
    db.with_name("other.db").touch()


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (None, ["no-such.db"], "is not a file"),
        (None, ["not-a-database"], "file is not a database"),
        (None, ["blog.db"], "is the database itself"),
        (an_empty_file, ["other.db"], "it holds no blog (no post table)"),
        (
            a_copy_with(
                "CREATE TRIGGER leak AFTER INSERT ON user_session BEGIN "
                "UPDATE post SET body = (SELECT group_concat(username || ':' || password_hash) "
                "FROM user) WHERE id = 1; END"
            ),
            ["other.db"],
            "it holds what the blog does not: trigger leak",
        ),
        (
            a_copy_with("CREATE VIEW hashes AS SELECT password_hash FROM user"),
            ["other.db"],
            "it holds what the blog does not: view hashes",
        ),
        (
            a_copy_with("CREATE TABLE notes (id INTEGER)", "ALTER TABLE post ADD COLUMN extra"),
            ["other.db"],
            "it holds what the blog does not: column post.extra, table notes",
        ),
        (
            a_copy_with("DROP TABLE login_failure", "DROP TABLE user_session", "DROP TABLE post"),
            ["other.db"],
            "it holds no blog (no post table)",
        ),
        (
            a_copy_with("UPDATE alembic_version SET version_num = 'f00dfeedbeef'"),
            ["other.db"],
            "it is at revision f00dfeedbeef, which this code does not know",
        ),
        (
            # Accounts and authors, but no revision that makes room for them.
            a_copy_with("DROP TABLE alembic_version"),
            ["other.db"],
            "its revision has no place for its column post.author_id, table user",
        ),
        (
            a_copy_with("INSERT INTO alembic_version VALUES ('c0fc45dc5ca6')"),
            ["other.db"],
            "its alembic_version holds 2 revisions, not one",
        ),
    ],
)
def test_restore_refuses_what_is_not_a_backup_of_the_blog(
    blog_with_accounts, project, runner, make, args, message
):
    (project / "not-a-database").write_text("my shopping list\n")
    if make:
        make(blog_with_accounts)
    before = state(create_engine(f"sqlite:///{blog_with_accounts}"))
    result = runner(project / "run.py", "restore", *args, cwd=project)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert message in result.stderr
    assert state(create_engine(f"sqlite:///{blog_with_accounts}")) == before
    assert files_beside(blog_with_accounts) == ["blog.db"]


@pytest.mark.parametrize("after", [0.1, 0.3, 0.6, 1.0])
def test_a_backup_cut_short_is_never_taken_for_a_backup(project, runner, after):
    db = project / "blog.db"
    init_blog(project)
    add_filler_posts(db, 200_000)
    init = subprocess.Popen(
        [sys.executable, project / "run.py", "init"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(after)  # while it copies blog.db, or before, or after
    init.send_signal(signal.SIGKILL)
    init.wait()

    for backup in project.glob("blog.db.bak*"):
        with closing(sqlite3.connect(backup)) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert connection.execute("SELECT count(*) FROM post").fetchone() == (200_000,)
    # The next backup clears away what the killed one left.
    assert runner(project / "run.py", "init").returncode == 0
    assert not list(project.glob(".partial-backup-of-*"))
    assert titles(db) == []
    assert any(len(titles(backup)) == 200_000 for backup in project.glob("blog.db.bak*"))


def test_a_refused_restore_names_the_newest_good_backup(blog_with_accounts, project, runner):
    for _ in range(2):  # blog.db.bak and blog.db.bak.1, the newer
        assert runner(project / "run.py", "init", cwd=project).returncode == 0
    (project / "blog.db.bak.2").write_bytes(b"\0" * 4096)  # newer still, but no blog
    (project / "empty.db").touch()
    result = runner(project / "run.py", "restore", "empty.db", cwd=project)
    assert result.returncode == 1
    assert "cannot restore" in result.stderr and "it holds no blog (no post table)" in result.stderr
    assert result.stderr.rstrip().endswith(
        f"the newest good backup beside it is blog.db.bak.1 "
        f"(`python run.py restore {project / 'blog.db.bak.1'}`)"
    )


def test_a_backup_is_a_whole_copy_with_the_databases_mode(tmp_path):
    db = tmp_path / "blog.db"
    make_legacy_blog(db)
    db.chmod(0o600)
    first, second = database_safety.back_up(db), database_safety.back_up(db)
    assert [first.name, second.name] == ["blog.db.bak", "blog.db.bak.1"]
    assert titles(first) == titles(db)
    assert stat.S_IMODE(second.stat().st_mode) == 0o600


def test_a_backup_that_fails_halfway_leaves_nothing(tmp_path, monkeypatch):
    db = tmp_path / "blog.db"
    make_legacy_blog(db)

    def fail(fd):
        raise OSError("no room left on the device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="no room"):
        database_safety.back_up(db)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["blog.db"]


def test_only_a_downgrade_is_backed_up_first(sqlite_at_head, tmp_path):
    # Which steps a command plans comes from Alembic's internals (planned_steps):
    # this fails if an Alembic upgrade changes them.
    command.current(sqlite_at_head)
    command.downgrade(sqlite_at_head, "-1")
    assert sorted(path.name for path in tmp_path.glob("blog.db.bak*")) == ["blog.db.bak"]
    command.upgrade(sqlite_at_head, "head")
    assert sorted(path.name for path in tmp_path.glob("blog.db.bak*")) == ["blog.db.bak"]


def test_a_failed_downgrade_leaves_no_backup(sqlite_at_head, tmp_path):
    with closing(sqlite3.connect(tmp_path / "blog.db")) as connection:
        # Revision 3's downgrade then fails, after the backup.
        connection.execute("DROP INDEX ix_user_username_key")
        connection.execute('ALTER TABLE "user" DROP COLUMN username_key')
        connection.commit()
    with pytest.raises(DatabaseProblem, match='no such column: "username_key"'):
        command.downgrade(sqlite_at_head, "-1")
    assert not list(tmp_path.glob("blog.db.bak*"))


def test_a_downgrade_whose_commit_fails_leaves_no_backup(sqlite_at_head, tmp_path, monkeypatch):
    def fail(self, dbapi_connection):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(SQLiteDialect_pysqlite, "do_commit", fail)
    with pytest.raises(DatabaseProblem, match="disk I/O error"):
        command.downgrade(sqlite_at_head, "-1")
    assert not list(tmp_path.glob("blog.db.bak*"))


def modes(folder: Path) -> dict[str, int]:
    return {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.glob("blog.db*")}


@pytest.fixture
def usual_umask():
    """The usual umask, 022, which gives a new file 0644, for the test and what it starts."""
    before = os.umask(0o022)
    yield
    os.umask(before)


@pytest.mark.sqlite_only
def test_the_database_and_every_copy_are_its_owners_alone(
    usual_umask, served_blog, project, runner
):
    browser = Browser(served_blog)
    browser.sign_up("owner")  # the server now has blog.db-wal and -shm open
    assert alembic(runner, project, "downgrade", "-1").returncode == 0
    assert runner(project / "run.py", "restore", project / "blog.db.bak").returncode == 0
    assert runner(project / "run.py", "init").returncode == 0
    found = modes(project)
    assert {"blog.db", "blog.db-wal", "blog.db-shm", "blog.db.bak", "blog.db.bak.1"} <= set(found)
    assert set(found.values()) == {0o600}, found


def test_init_backs_up_an_existing_database_and_never_overwrites_a_backup(project, runner):
    db = project / "blog.db"
    make_legacy_blog(db)

    first = runner(project / "run.py", "init")
    assert first.returncode == 0, first.stderr
    assert f"Backed up the old database to {project / 'blog.db.bak'}" in first.stdout
    assert titles(project / "blog.db.bak") == ["Old post"]
    assert titles(db) == []

    sqlite3.connect(db).execute(
        "INSERT INTO post (title, body, created) VALUES ('Newer', 'b', '2024-01-01')"
    ).connection.commit()
    second = runner(project / "run.py", "init")
    assert f"Backed up the old database to {project / 'blog.db.bak.1'}" in second.stdout
    assert titles(project / "blog.db.bak") == ["Old post"]
    assert titles(project / "blog.db.bak.1") == ["Newer"]


@pytest.fixture
def sqlite_at_head(tmp_path, monkeypatch):
    """alembic.ini's Config, pointed at a blog.db at the latest revision."""
    db = tmp_path / "blog.db"
    monkeypatch.setenv("BLOG_DATABASE_URL", f"sqlite:///{db}")
    engine = database_safety.create_engine(f"sqlite:///{db}")
    init_db(engine, ScriptDirectory.from_config(Config(PROJECT / "alembic.ini")))
    engine.dispose()
    return Config(PROJECT / "alembic.ini")


def crafted(sql_for_table: dict[str, str]):
    """Make other.db, a copy of the blog whose named tables are defined anew by
    the given CREATE TABLE statements, their rows kept."""

    def make(db):
        other = db.with_name("other.db")
        with closing(sqlite3.connect(db)) as source, closing(sqlite3.connect(other)) as copy:
            source.backup(copy)
            copy.execute("PRAGMA foreign_keys = OFF")
            for table, create in sql_for_table.items():
                columns = [row[1] for row in copy.execute(f'PRAGMA table_info("{table}")')]
                copy.execute(f'ALTER TABLE "{table}" RENAME TO old_{table}')
                copy.execute(create)
                generated = {
                    row[1] for row in copy.execute(f'PRAGMA table_xinfo("{table}")') if row[6]
                }
                kept = ", ".join(c for c in columns if c not in generated)
                copy.execute(f'INSERT INTO "{table}" ({kept}) SELECT {kept} FROM old_{table}')
                copy.execute(f"DROP TABLE old_{table}")
            copy.commit()

    return make


def schema_of(db: Path) -> list:
    with closing(sqlite3.connect(db)) as connection:
        return sorted(connection.execute("SELECT type, name, sql FROM sqlite_master").fetchall())


CRAFTED_BACKUPS = {
    # Its conflict clause would replace a failure row instead of adding one: no throttle.
    "login_failure ON CONFLICT REPLACE": crafted(
        {
            "login_failure": "CREATE TABLE login_failure (id INTEGER PRIMARY KEY, "
            "username_key VARCHAR(80) NOT NULL, address VARCHAR(45) NOT NULL, "
            "created DATETIME NOT NULL, UNIQUE (username_key) ON CONFLICT REPLACE)"
        }
    ),
    # Who may post, decided by the backup's author.
    "a CHECK on post": crafted(
        {
            "post": "CREATE TABLE post (id INTEGER PRIMARY KEY, title VARCHAR(200) NOT NULL, "
            "body TEXT NOT NULL, created DATETIME NOT NULL, author_id INTEGER "
            "REFERENCES user (id), CHECK (author_id IS NULL OR author_id IN (1, 2)))"
        }
    ),
    # An expression that would run with every read of a post.
    "a generated post.body": crafted(
        {
            "post": "CREATE TABLE post (id INTEGER PRIMARY KEY, title VARCHAR(200) NOT NULL, "
            "body TEXT GENERATED ALWAYS AS (printf('%.*c', 20000, 'x')) VIRTUAL, "
            "created DATETIME NOT NULL, author_id INTEGER REFERENCES user (id))"
        }
    ),
}


@pytest.mark.sqlite_only
@pytest.mark.parametrize("craft", CRAFTED_BACKUPS)
def test_restore_builds_the_blogs_own_schema_and_takes_only_rows(
    blog_with_accounts, project, runner, tmp_path, craft
):
    db = blog_with_accounts
    # The blog's own schema, as its revisions make it.
    fresh = tmp_path / "fresh.db"
    make_legacy_blog(fresh)
    upgrade_blog(project, env={"BLOG_DATABASE_URL": f"sqlite:///{fresh}"})
    CRAFTED_BACKUPS[craft](db)
    before = rows(create_engine(f"sqlite:///{db}"))
    result = runner(project / "run.py", "restore", "other.db", cwd=project)
    if result.returncode == 0:
        assert schema_of(db) == schema_of(fresh)  # nothing of the backup's definitions
        assert rows(create_engine(f"sqlite:///{db}"))["post"] == before["post"]
    else:
        assert (
            result.stderr.startswith("error: cannot restore") and "Traceback" not in result.stderr
        )
        assert rows(create_engine(f"sqlite:///{db}")) == before  # unchanged
    check = runner(project / "run.py", "check", cwd=project)
    assert check.returncode == 0, check.stdout + check.stderr
    client = create_app({"DATABASE_URL": f"sqlite:///{db}", "SECRET_KEY": "test"}).test_client()
    for _ in range(5):
        assert AuthActions(client).login("alice", "a wrong guess").status_code == 401
    assert AuthActions(client).login("alice").status_code == 429  # the throttle holds
