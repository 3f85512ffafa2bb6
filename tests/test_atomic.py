"""Migrations that cannot lose data: faults mid-revision, every step up and down, offline SQL."""

import sqlite3
from datetime import datetime

import pytest
from alembic import command
from alembic.runtime import migration
from sqlalchemy import MetaData, create_engine, func, select

from .project import ADD_AUTHOR, ADD_SESSIONS, PROJECT, REVISIONS
from .snapshot import columns, current_revision, rows, state, unchanged_part


class InjectedFault(Exception):
    pass


def add_data(engine):
    """Rows of every kind the schema has room for: odd text, long bodies, NULL authors."""
    tables = MetaData()
    tables.reflect(engine)
    post = tables.tables["post"]
    with engine.begin() as connection:
        n = connection.scalar(select(func.count()).select_from(post))
        author_ids = [None]
        if "user" in tables.tables:
            user = tables.tables["user"]
            connection.execute(
                user.insert(),
                [
                    {
                        "username": f"writer{n}-{i}",
                        "password_hash": "scrypt:x$" + "h" * 100,
                        "created": datetime(2024, 1, 1, 12, i),
                    }
                    for i in range(3)
                ],
            )
            author_ids += connection.scalars(select(user.c.id)).all()
        if "user_session" in tables.tables:
            connection.execute(
                tables.tables["user_session"].insert(),
                {"token_hash": f"{n:064x}", "user_id": author_ids[-1], "created": datetime.now()},
            )
            connection.execute(
                tables.tables["login_failure"].insert(),
                {"username_key": f"writer{n}-0", "address": "::1", "created": datetime.now()},
            )
        posts = [
            {"title": "Ünïcödé ✓ 日本語 🎉", "body": "Ça va? " * 8_000},  # 64,000 bytes
            {"title": "x" * 200, "body": "the largest allowed title"},
            {"title": "quotes ' \" ; -- DROP TABLE post", "body": "\n\ttabs and trailing space "},
        ]
        for i, row in enumerate(posts):
            row["created"] = datetime(2024, 2, 1, 8, n + i)
            if "author_id" in post.columns:
                row["author_id"] = author_ids[i % len(author_ids)]
        connection.execute(post.insert(), posts)


@pytest.fixture
def full_db(legacy_db):
    add_data(legacy_db)
    return legacy_db


@pytest.mark.parametrize("direction", ["upgrade", "downgrade"])
@pytest.mark.parametrize("revision", REVISIONS, ids=lambda revision: revision.doc)
def test_failing_revision_leaves_the_database_as_it_was(
    alembic_cfg, full_db, monkeypatch, backend, revision, direction
):
    below = revision.down_revision or "base"
    start, target = (
        (below, revision.revision) if direction == "upgrade" else (revision.revision, below)
    )
    command.upgrade(alembic_cfg, start)
    add_data(full_db)
    before = state(full_db)

    # Fail after the revision's last operation and its alembic_version update,
    # just before the transaction would commit.
    update_to_step = migration.HeadMaintainer.update_to_step

    def update_then_fail(self, step):
        update_to_step(self, step)
        if step.revision.revision == revision.revision:
            raise InjectedFault(f"{direction} of {revision.revision}")

    with monkeypatch.context() as patch, pytest.raises(InjectedFault):
        patch.setattr(migration.HeadMaintainer, "update_to_step", update_then_fail)
        getattr(command, direction)(alembic_cfg, target)

    after = state(full_db)
    builds_concurrently = direction == "upgrade" and revision.revision in (ADD_AUTHOR, ADD_SESSIONS)
    if backend == "mysql" or (backend == "postgresql" and builds_concurrently):
        # MariaDB commits every DDL statement at once, and PostgreSQL what comes
        # before an index built CONCURRENTLY: the schema has moved while
        # alembic_version, an ordinary row, was rolled back. Running the same
        # command again finishes the revision.
        assert after["schema"] != before["schema"]
        assert after["rows"]["alembic_version"] == before["rows"]["alembic_version"]
    else:
        assert after == before
    getattr(command, direction)(alembic_cfg, target)  # and it still runs afterwards
    assert current_revision(full_db) == (None if target == "base" else target)


def test_stairway_keeps_everything_a_revision_does_not_own(alembic_cfg, full_db):
    steps = [("upgrade", "+1"), ("downgrade", "-1"), ("upgrade", "+1")]
    for revision in REVISIONS:
        add_data(full_db)
        for direction, relative in steps:
            rows_before, columns_before = rows(full_db), columns(full_db)
            getattr(command, direction)(alembic_cfg, relative)
            was, now = unchanged_part(rows_before, columns_before, full_db)
            assert now == was, f"{direction} {relative} at {revision.revision}"
        assert current_revision(full_db) == revision.revision
    assert current_revision(full_db) == REVISIONS[-1].revision
    command.downgrade(alembic_cfg, "base")
    assert current_revision(full_db) is None


def offline_sql(runner, database_url, *args):
    result = runner(
        "-m",
        "alembic",
        "-c",
        PROJECT / "alembic.ini",
        *args,
        "--sql",
        env={"BLOG_DATABASE_URL": database_url},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def apply_sql(path, sql):
    with sqlite3.connect(path) as connection:
        connection.executescript(sql)


@pytest.mark.sqlite_only
def test_offline_sql_matches_online_migrations(
    alembic_cfg, full_db, database_url, runner, tmp_path
):
    path = tmp_path / "blog.db"
    untouched = path.read_bytes()

    upgrade_sql = offline_sql(runner, database_url, "upgrade", "head")
    assert upgrade_sql.startswith("BEGIN;") and upgrade_sql.rstrip().endswith("COMMIT;")
    assert "ALTER TABLE post ADD COLUMN author_id" in upgrade_sql
    assert path.read_bytes() == untouched

    offline = tmp_path / "offline.db"
    offline.write_bytes(untouched)
    offline_engine = create_engine(f"sqlite:///{offline}")
    apply_sql(offline, upgrade_sql)
    command.upgrade(alembic_cfg, "head")
    assert state(offline_engine) == state(full_db)

    migrated = path.read_bytes()
    downgrade_sql = offline_sql(runner, database_url, "downgrade", f"{REVISIONS[-1].revision}:base")
    assert path.read_bytes() == migrated
    apply_sql(offline, downgrade_sql)
    command.downgrade(alembic_cfg, "base")
    assert state(offline_engine) == state(full_db)
    assert set(columns(offline_engine)) == {"post", "alembic_version"}
