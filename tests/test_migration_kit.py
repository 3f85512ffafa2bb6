"""pytest-alembic's built-in tests, run untouched against the project's revisions.

Its `--test-alembic` collector does not run on pytest 9, so the tests are
imported by name. Each runs on SQLite and on every database server, starting
from the blog as it was before migrations (a post table, no alembic_version),
with rows seeded before and at each revision so that no migration is only ever
tried on empty tables.
"""

from datetime import datetime

import pytest
from pytest_alembic.config import Config as KitConfig
from pytest_alembic.plugin.fixtures import alembic_runner  # noqa: F401 (the kit's tests use it)
from pytest_alembic.tests import (  # noqa: F401 (collected by pytest)
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from pytest_alembic.tests.experimental import test_downgrade_leaves_no_trace  # noqa: F401

from before_migrations import make_legacy_database
from blog.models import Base
from database_safety import create_engine

from .pages import PASSWORD_HASH
from .project import ADD_AUTHOR, ADD_SESSIONS, CREATE_USERS


def post(title: str, **columns) -> dict:
    return {"__tablename__": "post", "title": title, "body": "body", **columns}


def user(id: int, username: str) -> dict:
    return {
        "__tablename__": "user",
        "id": id,
        "username": username,
        "password_hash": PASSWORD_HASH,
        "created": datetime(2021, 1, 1),
    }


@pytest.fixture
def alembic_engine(backend, database_url, request):
    """The test's database, made as the blog made it before migrations, with a post."""
    if backend != "sqlite" and request.function is test_downgrade_leaves_no_trace:
        pytest.skip(
            "MariaDB commits each DDL statement, and PostgreSQL a revision's first steps before "
            "it builds an index CONCURRENTLY, so the kit cannot roll back to its savepoint; "
            "test_atomic's stairway checks that downgrades leave no trace there"
        )
    engine = create_engine(database_url)
    make_legacy_database(engine, [post("Before migrations", created=datetime(2020, 1, 1))])
    yield engine
    engine.dispose()


@pytest.fixture
def alembic_config(alembic_cfg):
    return KitConfig(
        alembic_config=alembic_cfg,
        config_options={"target_metadata": Base.metadata},
        before_revision_data={
            CREATE_USERS: post("Still before accounts", created=datetime(2020, 6, 1)),
            ADD_AUTHOR: user(1, "early"),
            ADD_SESSIONS: user(3, "Mixed.Case"),
        },
        at_revision_data={
            CREATE_USERS: user(2, "first"),
            ADD_AUTHOR: post("By an author", created=datetime(2021, 2, 1), author_id=1),
            ADD_SESSIONS: [
                {
                    "__tablename__": "user_session",
                    "token_hash": "0" * 64,
                    "user_id": 3,
                    "created": datetime(2022, 1, 1),
                },
                {
                    "__tablename__": "login_failure",
                    "username_key": "mixed.case",
                    "address": "192.0.2.1",
                    "created": datetime(2022, 1, 1),
                },
            ],
        },
    )
