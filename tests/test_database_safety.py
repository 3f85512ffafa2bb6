"""database_safety.py, the safeguards that the blog and alembic/env.py share:
each in-process, then env.py as Alembic's template writes it, and the Alembic
commands that compare the models with the database."""

import contextlib
import difflib
import os
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import RevisionStep
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

import database_safety
from blog.maintenance import init_db
from database_safety import DatabaseProblem

from .blogs import init_blog, make_legacy_blog
from .project import ADD_AUTHOR, ADD_SESSIONS, PROJECT, SERVER_URL_VARIABLES, alembic
from .snapshot import titles


def test_blog_database_url_wins_over_alembic_ini(monkeypatch):
    config = Config(PROJECT / "alembic.ini")
    monkeypatch.delenv("BLOG_DATABASE_URL", raising=False)
    assert database_safety.database_url(config) == f"sqlite:///{PROJECT / 'blog.db'}"
    monkeypatch.setenv("BLOG_DATABASE_URL", "sqlite:////elsewhere/blog.db")
    assert database_safety.database_url(config) == "sqlite:////elsewhere/blog.db"


def test_an_ini_without_a_database_url_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("BLOG_DATABASE_URL", raising=False)
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = alembic\n")
    with pytest.raises(DatabaseProblem, match="names no sqlalchemy.url"):
        database_safety.database_url(Config(tmp_path / "alembic.ini"))


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://blog:s3cret@db.example/blog",
        "postgresql+psycopg://blog@db.example/blog?password=s3cret&sslmode=require",
        "mysql+pymysql://blog@db.example/blog?passwd=s3cret",
    ],
)
def test_a_shown_url_has_no_password(url):
    assert "s3cret" not in database_safety.shown(url)
    assert "db.example/blog" in database_safety.shown(url)


def test_sqlite_connections_have_the_blogs_settings(tmp_path):
    engine = database_safety.create_engine(f"sqlite:///{tmp_path / 'blog.db'}")
    with engine.begin() as connection:
        settings = [
            connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        ]
        assert settings == ["wal", 2, 1, 5000]  # synchronous 2 is FULL
        # BEGIN IMMEDIATE: the write lock is this transaction's before it writes.
        other = sqlite3.connect(tmp_path / "blog.db", timeout=0)
        with closing(other), pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    engine.dispose()


def test_a_missing_sqlite_file_is_refused_not_created(tmp_path):
    url = f"sqlite:///{tmp_path / 'blog.db'}"
    with pytest.raises(DatabaseProblem, match="does not exist; run `python run.py init`"):
        database_safety.refuse_a_missing_database(url)
    assert not (tmp_path / "blog.db").exists()


def test_value_columns_leave_out_generated_ones(tmp_path):
    engine = database_safety.create_engine(f"sqlite:///{tmp_path / 'blog.db'}")
    init_db(engine, ScriptDirectory.from_config(Config(PROJECT / "alembic.ini")))
    with engine.connect() as connection:
        assert database_safety.value_columns(connection, "user") == [
            "id",
            "username",
            "password_hash",
            "created",
        ]
    engine.dispose()


def downgrade_of(revision: str) -> list[RevisionStep]:
    script = ScriptDirectory.from_config(Config(PROJECT / "alembic.ini"))
    return [RevisionStep(script.revision_map, script.get_revision(revision), False)]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_a_dry_run_finds_what_a_downgrade_drops(dialect):
    # Also the check that Alembic's operations still end where the dry run looks.
    assert database_safety.dropped_by(dialect, downgrade_of(ADD_AUTHOR)) == [("post", "author_id")]
    assert database_safety.dropped_by(dialect, downgrade_of(ADD_SESSIONS)) == [
        ("login_failure", None),
        ("user_session", None),
        ("user", "username_key"),
    ]


def test_data_that_would_be_dropped_counts_rows_not_disposable_tables(tmp_path):
    engine = database_safety.create_engine(f"sqlite:///{tmp_path / 'blog.db'}")
    init_db(engine, ScriptDirectory.from_config(Config(PROJECT / "alembic.ini")))
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO user (username, password_hash, created) VALUES ('a', 'h', '2024')")
        )
        connection.execute(
            text(
                "INSERT INTO post (title, body, created, author_id) "
                "VALUES ('t', 'b', '2024-01-01', 1), ('u', 'b', '2024-01-01', NULL)"
            )
        )
        connection.execute(
            text("INSERT INTO user_session (token_hash, user_id, created) VALUES ('x', 1, '2024')")
        )
        steps = downgrade_of(ADD_SESSIONS) + downgrade_of(ADD_AUTHOR)
        assert database_safety.data_that_would_be_dropped("sqlite", connection, steps) == [
            "column post.author_id (set in 1 row)"
        ]
    engine.dispose()


def test_an_upgrade_of_a_database_without_the_blog_is_refused(tmp_path, monkeypatch):
    (tmp_path / "blog.db").touch()
    monkeypatch.setenv("BLOG_DATABASE_URL", f"sqlite:///{tmp_path / 'blog.db'}")
    with pytest.raises(DatabaseProblem, match="holds no blog to upgrade"):
        command.upgrade(Config(PROJECT / "alembic.ini"), "head")
    engine = create_engine(f"sqlite:///{tmp_path / 'blog.db'}")
    assert inspect(engine).get_table_names() == []
    engine.dispose()


# --- env.py and the alembic commands, as a user runs them ---------------------


def test_env_py_is_alembics_template_plus_a_few_lines():
    template = Path(command.__file__).parent / "templates" / "generic" / "env.py"
    stock = template.read_text().splitlines()
    ours = (PROJECT / "alembic" / "env.py").read_text().splitlines()
    added = [
        line
        for line in list(difflib.unified_diff(stock, ours, lineterm="", n=0))[2:]
        if line.startswith("+")
    ]
    assert len(added) <= 30, "\n".join(added)
    for stock_line in (
        "def run_migrations_offline() -> None:",
        "def run_migrations_online() -> None:",
        "if context.is_offline_mode():",
        "        context.run_migrations()",
    ):
        assert stock_line in ours


def test_migrations_never_import_flask(project, runner, tmp_path):
    # A flask that cannot be imported: the migrations must not need it.
    (tmp_path / "no-flask" / "flask").mkdir(parents=True)
    (tmp_path / "no-flask" / "flask" / "__init__.py").write_text("raise ImportError('flask')\n")
    make_legacy_blog(project / "blog.db")
    env = {"PYTHONPATH": str(tmp_path / "no-flask")}
    for args in (["upgrade", "head"], ["current"], ["downgrade", "-1"], ["history"]):
        result = alembic(runner, project, *args, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    assert titles(project / "blog.db") == ["Old post"]


def server_urls_with_a_password(database: str, backends=tuple(SERVER_URL_VARIABLES)) -> list[str]:
    """A URL of each configured server, with ?password=."""
    urls = []
    for backend in backends:
        variable = SERVER_URL_VARIABLES[backend]
        if os.environ.get(variable):
            base = create_engine(os.environ[variable]).url
            urls.append(
                base.set(database=database)
                .update_query_dict({"password": "s3cret-word"})
                .render_as_string(hide_password=False)
            )
    if not urls:
        pytest.skip(f"none of {', '.join(SERVER_URL_VARIABLES[b] for b in backends)} is set")
    return urls


def test_alembic_never_prints_a_password_in_the_url(project, runner):
    for url in server_urls_with_a_password("no_such_database_here"):
        for args in (["current"], ["upgrade", "head"], ["downgrade", "-1"]):
            result = alembic(runner, project, *args, env={"BLOG_DATABASE_URL": url})
            assert result.returncode != 0
            assert "FAILED:" in result.stdout
            assert "s3cret-word" not in result.stdout + result.stderr


def test_no_blog_to_upgrade_names_the_database_without_its_password(project, runner):
    # PostgreSQL here trusts local connections and ignores the password; its
    # maintenance database holds no blog.
    [url] = server_urls_with_a_password("postgres", backends=["postgresql"])
    result = alembic(runner, project, "upgrade", "head", env={"BLOG_DATABASE_URL": url})
    assert result.returncode != 0
    assert "holds no blog to upgrade" in result.stdout
    assert "s3cret-word" not in result.stdout + result.stderr


@pytest.fixture
def blog_at_head(project, blog_env):
    """The project copy's database, made as `run.py init` makes it."""
    init_blog(project, blog_env)
    return blog_env


def test_alembic_check_passes_on_a_database_that_matches_the_models(project, runner, blog_at_head):
    result = alembic(runner, project, "check", env=blog_at_head)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No new upgrade operations detected." in result.stdout


def change_the_schema(project, backend, blog_env):
    """An extra column in post, and ix_login_failure_address gone."""
    engine = create_engine(blog_env.get("BLOG_DATABASE_URL", f"sqlite:///{project / 'blog.db'}"))
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE post ADD COLUMN extra INTEGER"))
        on = " ON login_failure" if backend == "mysql" else ""
        connection.execute(text(f"DROP INDEX ix_login_failure_address{on}"))
    engine.dispose()


def test_alembic_check_names_each_difference(project, runner, blog_at_head, backend):
    change_the_schema(project, backend, blog_at_head)
    result = alembic(runner, project, "check", env=blog_at_head)
    assert result.returncode != 0
    assert "New upgrade operations detected" in result.stdout
    # Each difference once.
    assert result.stdout.count("'remove_column', None, 'post', Column('extra'") == 1
    assert result.stdout.count("'add_index', Index('ix_login_failure_address'") == 1


def test_autogenerate_writes_a_draft_revision(project, runner, blog_at_head, backend):
    change_the_schema(project, backend, blog_at_head)
    versions = project / "alembic" / "versions"
    before = set(versions.glob("*.py"))
    result = alembic(runner, project, "revision", "--autogenerate", "-m", "Draft", env=blog_at_head)
    assert result.returncode == 0, result.stdout + result.stderr
    [draft] = set(versions.glob("*.py")) - before
    source = draft.read_text()
    assert f'down_revision: str | Sequence[str] | None = "{ADD_SESSIONS}"' in source
    assert "op.drop_column('post', 'extra')" in source
    assert "op.create_index('ix_login_failure_address', 'login_failure'" in source


# A password with an unencoded "@": URL parsers take what follows the first "@"
# for the host.
UNENCODED_AT = [
    "postgresql+psycopg://postgres:p@Sup3rS3cret@127.0.0.1:1/x",
    "mysql+pymysql://root:p@Sup3rS3cret@127.0.0.1:1/x",
    "postgresql+psycopg://postgres:p@Sup3r S3cret@127.0.0.1:1/x",
]


@pytest.mark.parametrize("url", UNENCODED_AT)
@pytest.mark.parametrize("command", ["run.py check", "run.py", "alembic upgrade head", "copy to"])
def test_no_part_of_a_password_is_printed_however_the_url_is_written(project, runner, url, command):
    init_blog(project)
    if command == "copy to":
        result = runner(project / "run.py", "copy", f"sqlite:///{project / 'blog.db'}", url)
    elif command.startswith("alembic"):
        result = alembic(runner, project, *command.split()[1:], env={"BLOG_DATABASE_URL": url})
    else:
        result = runner(project / "run.py", *command.split()[1:], env={"BLOG_DATABASE_URL": url})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "S3cret" not in output
    assert "%40" in output  # what to write instead
    assert "Traceback" not in output


@contextlib.contextmanager
def write_lock_held(path: Path, seconds: float):
    """Another process's write transaction on the SQLite file, for so long."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode = WAL")  # as the blog runs it
    holder.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(seconds, holder.rollback)
    timer.start()
    try:
        yield
    finally:
        timer.join()
        holder.close()


@pytest.mark.sqlite_only
@pytest.mark.parametrize("command", ["alembic upgrade head", "run.py init"])
def test_a_command_waits_for_the_write_lock_longer_than_a_page(project, runner, command):
    make_legacy_blog(project / "blog.db")
    program, *args = command.split()
    with write_lock_held(project / "blog.db", 8):
        if program == "alembic":
            result = alembic(runner, project, *args)
        else:
            result = runner(project / program, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "waiting for the write lock" in result.stderr


@pytest.mark.sqlite_only
def test_how_long_a_command_waits_is_a_setting(project, runner):
    make_legacy_blog(project / "blog.db")
    with write_lock_held(project / "blog.db", 8):
        result = alembic(runner, project, "upgrade", "head", env={"BLOG_COMMAND_WAIT_SECONDS": "4"})
    assert result.returncode != 0
    assert "database is locked" in result.stdout
    assert "BLOG_COMMAND_WAIT_SECONDS" in result.stdout + result.stderr
