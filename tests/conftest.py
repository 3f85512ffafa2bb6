import argparse
import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest
from alembic.config import Config
from sqlalchemy import URL, create_engine, insert, make_url

from before_migrations import make_legacy_database
from blog import create_app
from blog.db import get_db
from blog.maintenance import init_db, migration_scripts
from blog.models import Post, User

from . import commands
from .blogs import add_accounts, add_filler_posts, copy_blog, init_blog
from .pages import COMPILED_TEMPLATES, FAST_PASSWORD_HASH_METHOD, PASSWORD_HASH, AuthActions
from .project import PROJECT, SERVER_URL_VARIABLES
from .server import serving


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: the test is about SQLite itself")
    config.addinivalue_line("markers", "only_on(*backends): the test is about these backends")
    config.addinivalue_line("markers", "alembic: pytest-alembic's tests (test_migration_kit)")
    config.addinivalue_line("markers", "processes: the test starts processes (not in test-fast)")


# A test that uses one of these starts processes: `make test-fast` leaves it out.
PROCESS_FIXTURES = {"runner", "project", "served_blog"}


def pytest_collection_modifyitems(items):
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        if uses & PROCESS_FIXTURES or item.path.name == "test_browser.py":
            item.add_marker("processes")
    # The slow ones first, so that the run does not end waiting on one of them.
    items.sort(key=lambda item: item.get_closest_marker("processes") is None)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's load scheduling, but with the browser tests all in one
    test process, which then starts Chromium, Java and their blog once.
    (xdist_group marks would say this, but their grouping is lost on pytest 9.)"""
    from xdist.scheduler import LoadScopeScheduling

    class BrowserTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "browser" if nodeid.startswith("tests/test_browser.py::") else nodeid

    return BrowserTestsTogether(config, log)


def pytest_terminal_summary(terminalreporter):
    missing = [name for name in SERVER_URL_VARIABLES.values() if not os.environ.get(name)]
    if missing:
        terminalreporter.write_line(
            f"Only SQLite was tested: set {' and '.join(missing)} to run the tests on "
            "PostgreSQL and MariaDB too (README, Tests and benchmarks)."
        )


def pytest_generate_tests(metafunc):
    # A test that uses a database runs on SQLite and on every server,
    # unless it is about SQLite itself, or about some backends only.
    if "backend" in metafunc.fixturenames:
        # (A server without its variable is named once, at the end of the run.)
        servers = [
            name for name, variable in SERVER_URL_VARIABLES.items() if os.environ.get(variable)
        ]
        sqlite_only = metafunc.definition.get_closest_marker("sqlite_only")
        backends = ["sqlite"] if sqlite_only else ["sqlite", *servers]
        if only_on := metafunc.definition.get_closest_marker("only_on"):
            backends = [backend for backend in backends if backend in only_on.args]
            if not backends:
                needs = " or ".join(SERVER_URL_VARIABLES[name] for name in only_on.args)
                reason = f"a test of {' and '.join(only_on.args)} alone: set {needs}"
                backends = [pytest.param(None, marks=pytest.mark.skip(reason=reason))]
        metafunc.parametrize("backend", backends)


@contextlib.contextmanager
def database_of_its_own(server: URL, options: str = "") -> Iterator[URL]:
    name = f"blog_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}{options}")
    try:
        yield server.set(database=name)
    finally:
        with engine.connect() as connection:
            force = " WITH (FORCE)" if server.get_backend_name() == "postgresql" else ""
            connection.exec_driver_sql(f"DROP DATABASE {name}{force}")
        engine.dispose()


@contextlib.contextmanager
def schema_of_its_own(database: URL) -> Iterator[URL]:
    """On PostgreSQL: whatever connects with the URL creates and finds its tables
    in this schema alone."""
    name = f"blog_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(database, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {name}")
    try:
        yield database.update_query_dict({"options": f"-csearch_path={name}"})
    finally:
        with engine.connect() as connection:
            # A connection the test left (a killed process's) would keep DROP waiting.
            connection.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            connection.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
        engine.dispose()


@pytest.fixture(scope="session")
def postgresql_test_database():
    """A database of this test process's own, where each test gets a schema:
    making a database copies the server's template, six times the server's
    work of a schema."""
    with database_of_its_own(make_url(os.environ[SERVER_URL_VARIABLES["postgresql"]])) as url:
        yield url


@pytest.fixture
def database_url(backend, tmp_path, request):
    """A database of the test's own (on PostgreSQL a schema), dropped afterwards;
    never the project's blog.db."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'blog.db'}"
        return
    if backend == "postgresql":
        place = schema_of_its_own(request.getfixturevalue("postgresql_test_database"))
    else:
        server = make_url(os.environ[SERVER_URL_VARIABLES[backend]])
        place = database_of_its_own(server, " CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
    with place as url:
        yield url.render_as_string(hide_password=False)


@pytest.fixture
def alembic_cfg(database_url, monkeypatch):
    """The project's alembic.ini, pointed at the test's database the way a user would,
    who has taken a dump of a database server and lets a downgrade drop data
    (`alembic -x drop_data=yes`)."""
    monkeypatch.setenv("BLOG_DATABASE_URL", database_url)
    return Config(PROJECT / "alembic.ini", cmd_opts=argparse.Namespace(x=["drop_data=yes"]))


@pytest.fixture
def legacy_db(database_url):
    """A blog.db as the blog made it before migrations: posts and no alembic_version."""
    engine = create_engine(database_url)
    make_legacy_database(
        engine,
        [
            {"title": "Hello", "body": "The first post.", "created": datetime(2020, 1, 1)},
            {"title": "Ünïcödé ✓", "body": "Ça va?\n" * 1000, "created": datetime(2020, 1, 2)},
            {"title": "x" * 200, "body": "The longest title.", "created": datetime(2020, 1, 3)},
        ],
    )
    yield engine
    engine.dispose()


def app_on(database_url: str):
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": database_url,
            "SECRET_KEY": "test",
            "POSTS_PER_PAGE": 3,
            "PASSWORD_HASH_METHOD": FAST_PASSWORD_HASH_METHOD,
            "CHECK_DATABASE": False,  # the database is copied before, or made after
        }
    )
    app.jinja_env.bytecode_cache = COMPILED_TEMPLATES
    return app


def make_test_blog(app) -> None:
    """What `run.py init` makes, with two users and a post of each kind."""
    init_db(app.extensions["db_engine"], migration_scripts(app))
    with app.app_context():
        db = get_db()
        db.execute(
            insert(User),
            [
                {
                    "username": "test",
                    "password_hash": PASSWORD_HASH,
                    "created": datetime(2021, 1, 1),
                },
                {
                    "username": "other",
                    "password_hash": PASSWORD_HASH,
                    "created": datetime(2021, 1, 2),
                },
            ],
        )
        db.execute(
            insert(Post),
            [
                {
                    "title": "Written before accounts",
                    "body": "legacy body",
                    "author_id": None,
                    "created": datetime(2020, 1, 1),
                },
                {
                    "title": "test title",
                    "body": "test\nbody",
                    "author_id": 1,
                    "created": datetime(2021, 1, 1),
                },
            ],
        )
        db.commit()


@pytest.fixture(scope="session")
def sqlite_test_blog(tmp_path_factory):
    """The SQLite test blog, made once per test process: a copy takes a few
    milliseconds, making it some thirty."""
    path = tmp_path_factory.mktemp("test_blog") / "blog.db"
    app = app_on(f"sqlite:///{path}")
    make_test_blog(app)
    app.extensions["db_engine"].dispose()
    return path


@pytest.fixture
def app(request, backend, database_url):
    if backend == "sqlite":
        copy_blog(request.getfixturevalue("sqlite_test_blog"), make_url(database_url).database)
    app = app_on(database_url)
    if backend != "sqlite":
        make_test_blog(app)
    yield app
    app.extensions["db_engine"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth(client):
    return AuthActions(client)


@pytest.fixture
def project(tmp_path):
    """A copy of the project to run its commands in, so its blog.db is the copy's."""
    copy = tmp_path / "project"
    for name in ("alembic", "blog"):
        shutil.copytree(PROJECT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("alembic.ini", "run.py", "database_safety.py", "before_migrations.py"):
        shutil.copy(PROJECT / name, copy / name)
    return copy


@pytest.fixture
def runner(tmp_path):
    """Run a command the way a user types it, from a folder outside the project."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args, env=None, cwd=elsewhere, timeout=120):
        environ = {k: v for k, v in os.environ.items() if k != "BLOG_DATABASE_URL"}
        environ.update(env or {})
        return commands.run(args, cwd=cwd, env=environ, timeout=timeout)

    return run


@pytest.fixture
def blog_env(backend, database_url):
    """What points run.py and alembic at the test's database."""
    return {} if backend == "sqlite" else {"BLOG_DATABASE_URL": database_url}


@pytest.fixture
def serve(project):
    """Start `python run.py` from a copy of the project, with these options and
    settings (BLOG_* variables), on a new database; its base URL."""
    with contextlib.ExitStack() as servers:

        def start(*options, **settings):
            init_blog(project, settings)
            # A file, not a pipe: nobody reads the request log while the test runs.
            command = [sys.executable, project / "run.py", *options, "--port"]
            return servers.enter_context(serving(command, project / "server.log", settings))

        yield start


@pytest.fixture
def served_blog(serve, blog_env):
    """The blog served by `python run.py` from a copy of the project."""
    return serve(**blog_env)


@pytest.fixture
def blog_with_accounts(project):
    db = project / "blog.db"
    init_blog(project)
    add_filler_posts(db, 3)
    add_accounts(db)
    db.chmod(0o600)  # password hashes are nobody else's business
    return db
