import argparse
import html
import os
import re
import shutil
import subprocess
import sys
import uuid
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, insert, select
from werkzeug.security import generate_password_hash

from blog import create_app
from blog.db import get_db
from blog.maintenance import init_db, migration_scripts
from blog.models import Post, User

from .legacy import init_blog, make_legacy_database
from .server import serving

PROJECT = Path(__file__).resolve().parent.parent

# The project's revisions, from the first to the head.
REVISIONS = list(
    reversed(list(ScriptDirectory.from_config(Config(PROJECT / "alembic.ini")).walk_revisions()))
)
CREATE_USERS, ADD_AUTHOR, ADD_SESSIONS = (revision.revision for revision in REVISIONS)

# What a test user types to log in; hashed once, as hashing is slow on purpose.
PASSWORD = "correct horse"
PASSWORD_HASH = generate_password_hash(PASSWORD)


# Database servers the tests also run on, when these variables give their URLs.
SERVER_URL_VARIABLES = {
    "postgresql": "BLOG_TEST_POSTGRES_URL",
    "mysql": "BLOG_TEST_MYSQL_URL",
}


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


@pytest.fixture
def database_url(backend, tmp_path):
    """A database of the test's own, dropped afterwards; never the project's blog.db."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'blog.db'}"
        return
    server = create_engine(os.environ[SERVER_URL_VARIABLES[backend]], isolation_level="AUTOCOMMIT")
    name = f"blog_test_{uuid.uuid4().hex[:12]}"
    with server.connect() as connection:
        connection.exec_driver_sql(
            f"CREATE DATABASE {name}"
            + (" CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci" if backend == "mysql" else "")
        )
    try:
        yield server.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with server.connect() as connection:
            connection.exec_driver_sql(
                f"DROP DATABASE {name}" + (" WITH (FORCE)" if backend == "postgresql" else "")
            )
        server.dispose()


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


@pytest.fixture
def app(database_url):
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": database_url,
            "SECRET_KEY": "test",
            "POSTS_PER_PAGE": 3,
            "CHECK_DATABASE": False,  # init_db makes it next
        }
    )
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
    yield app
    app.extensions["db_engine"].dispose()


def shows_logged_in(page: str, username: str) -> bool:
    """Whether the page's menu names the user and offers to log out."""
    return f'href="/users/{username}"' in page and "Log out" in page and "Log in" not in page


def flashes(page: str, role: str) -> list[str]:
    """The messages a page announces: role "alert" for errors, "status" for successes."""
    return [html.unescape(m) for m in re.findall(rf'role="{role}"[^>]*>([^<]*)<', page)]


class FormFields(HTMLParser):
    """A page's form fields by name: the value a browser fills in, and the attributes."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.attributes: dict[str, dict[str, str]] = {}
        self._textarea: str | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        fields = {name: value or "" for name, value in attrs}
        if tag == "input" and fields.get("type") not in ("hidden", "submit"):
            self.values[fields["name"]] = fields.get("value", "")
        elif tag == "textarea":
            self._textarea = fields["name"]
            self.values[self._textarea] = ""
        else:
            return
        self.attributes[fields["name"]] = fields

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self.values[self._textarea] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea":
            self._textarea = None


def form_fields(page: str) -> dict[str, str]:
    return FormFields(page).values


def field_rules(page: str, name: str) -> dict[str, str]:
    """What the browser checks and offers in a field before the form is sent."""
    attributes = FormFields(page).attributes[name]
    rules = ("required", "minlength", "maxlength", "pattern", "autocomplete")
    return {rule: attributes[rule] for rule in rules if rule in attributes}


def error_beside(page: str, name: str) -> str | None:
    """The error shown beside a form field, if the field is marked invalid and
    names it (aria-invalid, aria-describedby), as a screen reader finds it."""
    attributes = FormFields(page).attributes[name]
    if attributes.get("aria-invalid") != "true":
        return None
    for id in attributes.get("aria-describedby", "").split():
        found = re.search(rf'<p class="field-error" id="{id}">([^<]*)</p>', page)
        if found:
            return html.unescape(found.group(1))
    return None


def count_rows(app, model) -> int:
    """How many rows the model's table holds, as the blog sees them."""
    with app.app_context():
        return get_db().execute(select(func.count()).select_from(model)).scalar_one()


@pytest.fixture
def client(app):
    return app.test_client()


class AuthActions:
    def __init__(self, client):
        self._client = client

    def csrf_token(self) -> str:
        """The token that the blog's forms carry for this client's session."""
        page = self._client.get("/auth/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token, "the login page has no form token"
        return token.group(1)

    def post(self, url, data=None, **kwargs):
        """Send a form the way a browser does, with the page's token."""
        return self._client.post(
            url, data={"csrf_token": self.csrf_token(), **(data or {})}, **kwargs
        )

    def login(self, username="test", password=PASSWORD):
        return self.post("/auth/login", {"username": username, "password": password})

    def logout(self):
        return self.post("/auth/logout")


@pytest.fixture
def auth(client):
    return AuthActions(client)


@pytest.fixture
def project(tmp_path):
    """A copy of the project to run its commands in, so its blog.db is the copy's."""
    copy = tmp_path / "project"
    for name in ("alembic", "blog"):
        shutil.copytree(PROJECT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("alembic.ini", "run.py", "database_safety.py"):
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
        return subprocess.run(
            [sys.executable, *map(str, args)],
            cwd=cwd,
            env=environ,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def alembic(runner, project, *args, **kwargs):
    """`alembic -c project/alembic.ini ARGS`, typed from a folder outside the project."""
    return runner("-m", "alembic", "-c", project / "alembic.ini", *args, **kwargs)


@pytest.fixture
def blog_env(backend, database_url):
    """What points run.py and alembic at the test's database."""
    return {} if backend == "sqlite" else {"BLOG_DATABASE_URL": database_url}


@pytest.fixture
def served_blog(project, runner, blog_env):
    """The blog served by `python run.py` from a copy of the project."""
    init_blog(project, blog_env)
    # A file, not a pipe: nobody reads the request log while the test runs.
    command = [sys.executable, project / "run.py", "--port"]
    with serving(command, project / "server.log", blog_env) as base_url:
        yield base_url
