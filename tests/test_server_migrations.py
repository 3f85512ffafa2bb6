"""Migrations on PostgreSQL and MariaDB: bounded in what they block, finished by
running them again after any interruption (database_safety, the revisions)."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from before_migrations import make_legacy_database

from .blogs import add_posts_on_server, upgrade_blog
from .project import ADD_AUTHOR, ADD_SESSIONS, CREATE_USERS, PROJECT, REVISIONS, alembic
from .server import serving
from .webclient import Browser

pytestmark = pytest.mark.only_on("postgresql", "mysql")

READ_POSTS = "SELECT id, title FROM post ORDER BY id DESC LIMIT 3"


def revision_of(engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@pytest.fixture
def posts_at_revision_1(legacy_db, project, blog_env):
    """A blog at its first revision with 100,000 more posts."""
    upgrade_blog(project, CREATE_USERS, env=blog_env)
    add_posts_on_server(legacy_db, 100_000)
    return legacy_db


class Reader(threading.Thread):
    """Reads the newest posts over and over, each time on a new connection, as the
    blog's requests do, noting the longest wait."""

    def __init__(self, engine) -> None:
        super().__init__(daemon=True)
        self.engine, self.longest, self.stop = engine, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            with self.engine.connect() as connection:
                assert len(connection.execute(text(READ_POSTS)).all()) == 3
            self.longest = max(self.longest, time.monotonic() - started)
            time.sleep(0.05)


def test_a_long_transaction_never_freezes_readers_during_a_migration(
    posts_at_revision_1, project, runner, blog_env
):
    engine = posts_at_revision_1
    holder = engine.connect()
    # A report that reads post in a transaction of 15 s.
    holder.execute(text("SELECT count(*) FROM post"))
    threading.Timer(15, holder.rollback).start()
    reader = Reader(engine)
    reader.start()
    try:
        result = alembic(runner, project, "upgrade", "head", env=blog_env)
    finally:
        reader.stop.set()
        reader.join()
        holder.close()

    assert reader.longest < 3, f"a reader waited {reader.longest:.1f} s"
    waits = [line for line in result.stderr.splitlines() if "not granted" in line]
    assert waits and all("post" in line for line in waits), result.stderr
    if result.returncode == 0:
        assert revision_of(engine) == ADD_SESSIONS
    else:
        assert "Run the same command again" in result.stderr.strip().splitlines()[-1]
        assert revision_of(engine) in (CREATE_USERS, ADD_AUTHOR)
    finished = alembic(runner, project, "upgrade", "head", env=blog_env)
    assert finished.returncode == 0, finished.stderr
    assert revision_of(engine) == ADD_SESSIONS
    check = alembic(runner, project, "check", env=blog_env)
    assert check.returncode == 0, check.stderr


def test_a_lock_never_granted_fails_in_one_line_at_a_revision(
    posts_at_revision_1, project, runner, blog_env
):
    engine = posts_at_revision_1
    with engine.connect() as holder:
        holder.execute(text("SELECT count(*) FROM post"))
        result = alembic(runner, project, "-x", "lock_timeout=0.5", "upgrade", "head", env=blog_env)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "lock on post was not granted" in last and "Run the same command again" in last
    assert "Traceback" not in result.stderr
    assert revision_of(engine) == CREATE_USERS


# Offline (`--sql`), the SQL is written for a PostgreSQL that nothing connects to.
OFFLINE_POSTGRESQL = {"BLOG_DATABASE_URL": "postgresql+psycopg://blog@db.example/blog"}


@pytest.mark.parametrize("revision", REVISIONS, ids=lambda revision: revision.doc)
def test_squawk_finds_no_lock_hazard_in_any_revision(revision, project, runner, tmp_path):
    span = f"{revision.down_revision or 'base'}:{revision.revision}"
    sql = alembic(runner, project, "upgrade", span, "--sql", env=OFFLINE_POSTGRESQL)
    assert sql.returncode == 0, sql.stderr
    script = tmp_path / "upgrade.sql"
    script.write_text(sql.stdout)
    squawk = shutil.which("squawk", path=Path(sys.executable).parent)
    assert squawk, "squawk-cli is in requirements-dev.txt"
    result = subprocess.run(
        [squawk, "--config", PROJECT / ".squawk.toml", script], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
    assert "SET lock_timeout = '2000ms'" in sql.stdout
    assert "SET statement_timeout = '600000ms'" in sql.stdout


def test_offline_sql_refuses_to_drop_data_unless_told(project, runner):
    refused = alembic(runner, project, "downgrade", "head:base", "--sql", env=OFFLINE_POSTGRESQL)
    assert refused.returncode != 0
    assert "DROP" not in refused.stdout
    last = refused.stderr.strip().splitlines()[-1]
    assert "would drop" in last and "column post.author_id" in last and "table user;" in last
    assert "-x drop_data=yes" in last

    told = alembic(
        runner,
        project,
        "-x",
        "drop_data=yes",
        "downgrade",
        "head:base",
        "--sql",
        env=OFFLINE_POSTGRESQL,
    )
    assert told.returncode == 0, told.stderr
    assert 'DROP TABLE IF EXISTS "user"' in told.stdout


@pytest.mark.parametrize("setting", ["lock_timeout=soon", "lock_timeout=0", "statement_timeout=-1"])
def test_a_timeout_must_be_a_number_of_seconds(setting, project, runner):
    result = alembic(
        runner, project, "-x", setting, "upgrade", "head", "--sql", env=OFFLINE_POSTGRESQL
    )
    assert result.returncode != 0
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(
            f"-x {setting}: give a number of seconds, such as "
            + ("2" if setting.startswith("lock") else "600")
        )
    )


def columns_of(engine, table: str) -> set[str]:
    with engine.connect() as connection:
        return {column["name"] for column in inspect(connection).get_columns(table)}


def half_migrated(engine) -> bool:
    """Whether the schema is ahead of alembic_version: a revision was cut short."""
    revision = revision_of(engine)
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
    if revision == CREATE_USERS:
        return "author_id" in columns_of(engine, "post")
    if revision == ADD_AUTHOR:
        return "username_key" in columns_of(engine, "user") or "user_session" in tables
    return False


# Statements of revisions 2 and 3 on MariaDB, each committed as it ends.
MARIADB_STEPS = (
    "ADD COLUMN IF NOT EXISTS author_id",
    "ADD CONSTRAINT fk_post_author_id_user",
    "CREATE INDEX IF NOT EXISTS ix_post_author_id",
    "ADD COLUMN IF NOT EXISTS username_key",
    "CREATE TABLE IF NOT EXISTS user_session",
)


@pytest.mark.only_on("mysql")
def test_a_migration_killed_anywhere_on_mariadb_is_finished_by_running_it_again(
    legacy_db, project, runner, blog_env
):
    engine = legacy_db
    upgrade_blog(project, CREATE_USERS, env=blog_env)
    add_posts_on_server(engine, 200_000)
    command = [sys.executable, "-m", "alembic", "-c", project / "alembic.ini", "upgrade", "head"]

    cut_short = 0
    for statement in MARIADB_STEPS:
        back = alembic(runner, project, "downgrade", CREATE_USERS, env=blog_env)
        assert back.returncode == 0, back.stderr
        migration = subprocess.Popen(command, env=os.environ | blog_env, stderr=subprocess.DEVNULL)
        # SIGKILL while the server runs that statement (or, for one too quick to
        # be seen, as soon as the migration ends).
        with engine.connect() as watcher:
            while migration.poll() is None and not watcher.scalar(
                text(
                    "SELECT count(*) FROM information_schema.PROCESSLIST"
                    " WHERE INFO LIKE :statement AND ID <> CONNECTION_ID() AND DB = DATABASE()"
                ),
                {"statement": f"%{statement}%"},
            ):
                time.sleep(0.002)
        migration.send_signal(signal.SIGKILL)
        migration.wait()
        cut_short += half_migrated(engine)

        again = alembic(runner, project, "upgrade", "head", env=blog_env)
        assert again.returncode == 0, f"killed in {statement}: {again.stderr}"
        assert revision_of(engine) == ADD_SESSIONS
        check = alembic(runner, project, "check", env=blog_env)
        assert check.returncode == 0, f"killed in {statement}: {check.stderr}"
    # Some kills fell inside a revision, between statements MariaDB had committed.
    assert cut_short, "no kill left a revision half done"


@pytest.mark.only_on("postgresql")
@pytest.mark.parametrize(
    ("start", "index"),
    [(CREATE_USERS, "ix_post_author_id"), (ADD_AUTHOR, "ix_user_username_key")],
)
def test_a_migration_killed_while_it_builds_an_index_is_finished_by_running_it_again(
    start, index, legacy_db, project, runner, blog_env
):
    engine = legacy_db
    upgrade_blog(project, start, env=blog_env)
    add_posts_on_server(engine, 200_000)
    command = [sys.executable, "-m", "alembic", "-c", project / "alembic.ini"]
    # CREATE INDEX CONCURRENTLY waits for every transaction older than it: this
    # one holds the migration there, after it has committed its other steps.
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as older:
        older.execute(text("SELECT 1"))
        migration = subprocess.Popen(
            [*command, "-x", "lock_timeout=60", "upgrade", "head"], env=os.environ | blog_env
        )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as watcher:
            while not watcher.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE query LIKE :building AND datname = current_database()"
                ),
                {"building": f"CREATE %INDEX CONCURRENTLY %{index} %"},
            ):
                assert migration.poll() is None, "the migration ended before it built the index"
                time.sleep(0.01)
        migration.send_signal(signal.SIGKILL)
        migration.wait()
    assert half_migrated(engine)

    again = alembic(runner, project, "upgrade", "head", env=blog_env)
    assert again.returncode == 0, again.stderr
    assert revision_of(engine) == ADD_SESSIONS
    check = alembic(runner, project, "check", env=blog_env)
    assert check.returncode == 0, check.stderr
    with engine.connect() as connection:
        assert connection.scalar(
            text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:index)"),
            {"index": index},
        )


@pytest.fixture
def latin1_database(backend, database_url):
    """The test's MariaDB database with latin1 for a default, as many installations make it."""
    engine = create_engine(database_url)
    with engine.connect() as connection:
        connection.exec_driver_sql(
            f"ALTER DATABASE {engine.url.database} CHARACTER SET latin1 COLLATE latin1_swedish_ci"
        )
    engine.dispose()
    return database_url


def post_an_emoji(project, blog_env, tmp_path) -> tuple[int, str]:
    with serving([sys.executable, project / "run.py", "--port"], tmp_path / "log", blog_env) as url:
        browser = Browser(url)
        browser.sign_up("emoji")
        status, headers, _ = browser.request("/create", {"title": "Party 🎉", "body": "🥳"})
    return status, headers["Location"]


@pytest.mark.only_on("mysql")
def test_init_on_a_latin1_mariadb_makes_every_table_utf8mb4(
    latin1_database, project, runner, blog_env, tmp_path
):
    made = runner(project / "run.py", "init", env=blog_env)
    assert made.returncode == 0, made.stderr
    check = runner(project / "run.py", "check", env=blog_env)
    assert check.returncode == 0, check.stdout + check.stderr
    status, location = post_an_emoji(project, blog_env, tmp_path)
    assert status == 302 and "/post/" in location
    with create_engine(latin1_database).connect() as connection:
        assert connection.execute(text("SELECT title, body FROM post")).all() == [
            ("Party 🎉", "🥳")
        ]


@pytest.mark.only_on("mysql")
def test_a_latin1_post_table_is_refused_at_start_and_by_check_saying_what_to_run(
    latin1_database, project, runner, blog_env, tmp_path
):
    # The blog from before migrations made post in the database's latin1;
    # the revisions make their own tables in utf8mb4.
    make_legacy_database(create_engine(latin1_database), [])
    made = alembic(runner, project, "upgrade", "head", env=blog_env)
    assert made.returncode == 0, made.stderr

    refused = runner(project / "run.py", "--port", "0", env=blog_env, timeout=30)
    assert refused.returncode == 1
    assert len(refused.stderr.strip().splitlines()) == 1
    message = refused.stderr.strip()
    assert "stores text as latin1" in message and "an emoji" in message
    check = runner(project / "run.py", "check", env=blog_env)
    assert check.returncode == 1 and "post" in check.stdout and "latin1" in check.stdout

    # What the message says to run makes the blog store any text a form accepts.
    statements = message.split("run: ", 1)[1].rstrip(".")
    assert (
        statements
        == "ALTER TABLE `post` CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    )
    engine = create_engine(latin1_database)
    with engine.begin() as connection:
        connection.exec_driver_sql(statements)
    status, location = post_an_emoji(project, blog_env, tmp_path)
    assert status == 302 and "/post/" in location
    with engine.connect() as connection:
        assert connection.execute(text("SELECT title, body FROM post")).all() == [
            ("Party 🎉", "🥳")
        ]


@pytest.mark.parametrize(
    "command",
    [["upgrade", "head"], ["-x", "drop_data=yes", "downgrade", "base"]],
    ids=["upgrades", "downgrades"],
)
def test_migrations_started_together_run_one_at_a_time(
    legacy_db, project, runner, blog_env, command
):
    # As containers that each migrate at start do: three at once.
    if command[-1] == "base":
        upgrade_blog(project, env=blog_env)
    with ThreadPoolExecutor(3) as pool:
        results = list(
            pool.map(lambda _: alembic(runner, project, *command, env=blog_env), range(3))
        )

    for result in results:
        assert result.returncode == 0, result.stderr
        assert "ERROR" not in result.stderr and "FAILED" not in result.stderr, result.stderr
    assert revision_of(legacy_db) == (ADD_SESSIONS if command[-1] == "head" else None)
    tables = set(inspect(legacy_db).get_table_names())
    assert ("user" in tables) == (command[-1] == "head")
    # The first revision ran once, whichever command ran it.
    ran = "\n".join(result.stderr for result in results)
    step = (
        f"upgrade  -> {CREATE_USERS}" if command[-1] == "head" else f"downgrade {CREATE_USERS} ->"
    )
    assert ran.count(f"Running {step}") == 1, ran


def test_a_downgrade_from_a_half_applied_upgrade_says_to_finish_the_upgrade_first(
    legacy_db, project, runner, blog_env
):
    upgrade_blog(project, env=blog_env)
    # What an upgrade killed just before its last commit leaves (seen on
    # PostgreSQL): revision 3 applied whole, alembic_version still at revision 2.
    with legacy_db.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": ADD_AUTHOR})
    result = alembic(runner, project, "-x", "drop_data=yes", "downgrade", "base", env=blog_env)
    assert result.returncode != 0
    [failed] = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert "run `alembic upgrade head` first" in failed, result.stdout + result.stderr
    # As it says: the upgrade finishes, then the downgrade goes through.
    assert alembic(runner, project, "upgrade", "head", env=blog_env).returncode == 0
    done = alembic(runner, project, "-x", "drop_data=yes", "downgrade", "base", env=blog_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert revision_of(legacy_db) is None
