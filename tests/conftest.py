import os
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, insert
from werkzeug.security import generate_password_hash

from blog import create_app
from blog.db import get_db, init_db, migration_scripts
from blog.models import Post, User

from .legacy import make_legacy_database

PROJECT = Path(__file__).resolve().parent.parent

# The project's revisions, from the first to the head.
REVISIONS = list(reversed(list(
    ScriptDirectory.from_config(Config(PROJECT / "alembic.ini")).walk_revisions())))

# What a test user types to log in; hashed once, as hashing is slow on purpose.
PASSWORD = "correct horse"
PASSWORD_HASH = generate_password_hash(PASSWORD)


@pytest.fixture
def database_url(tmp_path):
    """A database of the test's own; never the project's blog.db."""
    return f"sqlite:///{tmp_path / 'blog.db'}"


@pytest.fixture
def alembic_cfg(database_url, monkeypatch):
    """The project's alembic.ini, pointed at the test's database the way a user would."""
    monkeypatch.setenv("BLOG_DATABASE_URL", database_url)
    return Config(PROJECT / "alembic.ini")


@pytest.fixture
def legacy_db(database_url):
    """A blog.db as the blog made it before migrations: posts and no alembic_version."""
    engine = create_engine(database_url)
    make_legacy_database(engine, [
        {"title": "Hello", "body": "The first post.", "created": datetime(2020, 1, 1)},
        {"title": "Ünïcödé ✓", "body": "Ça va?\n" * 1000, "created": datetime(2020, 1, 2)},
        {"title": "x" * 200, "body": "The longest title.", "created": datetime(2020, 1, 3)},
    ])
    yield engine
    engine.dispose()


@pytest.fixture
def app(database_url):
    app = create_app({
        "TESTING": True,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test",
        "POSTS_PER_PAGE": 3,
    })
    init_db(app.extensions["db_engine"], migration_scripts(app))
    with app.app_context():
        db = get_db()
        db.execute(insert(User), [
            {"username": "test", "password_hash": PASSWORD_HASH,
             "created": datetime(2021, 1, 1)},
            {"username": "other", "password_hash": PASSWORD_HASH,
             "created": datetime(2021, 1, 2)},
        ])
        db.execute(insert(Post), [
            {"title": "Written before accounts", "body": "legacy body", "author_id": None,
             "created": datetime(2020, 1, 1)},
            {"title": "test title", "body": "test\nbody", "author_id": 1,
             "created": datetime(2021, 1, 1)},
        ])
        db.commit()
    yield app
    app.extensions["db_engine"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


class AuthActions:
    def __init__(self, client):
        self._client = client

    def csrf_token(self) -> str:
        """The token that the blog's forms carry for this client's session."""
        page = self._client.get("/auth/login").get_data(as_text=True)
        return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    def post(self, url, data=None, **kwargs):
        """Send a form the way a browser does, with the page's token."""
        return self._client.post(url, data={"csrf_token": self.csrf_token(), **(data or {})},
                                 **kwargs)

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
        shutil.copytree(PROJECT / name, copy / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("alembic.ini", "run.py"):
        shutil.copy(PROJECT / name, copy / name)
    return copy


@pytest.fixture
def runner(tmp_path):
    """Run a command the way a user types it, from a folder outside the project."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args, env=None, cwd=elsewhere):
        environ = {k: v for k, v in os.environ.items() if k != "BLOG_DATABASE_URL"}
        environ.update(env or {})
        return subprocess.run(
            [sys.executable, *map(str, args)],
            cwd=cwd, env=environ, capture_output=True, text=True, timeout=120,
        )

    return run
