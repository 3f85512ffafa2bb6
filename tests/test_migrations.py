from datetime import datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData, Table, create_engine, inspect, select, text
from sqlalchemy.exc import IntegrityError

from before_migrations import LESSON_POSTS, legacy_post
from blog import create_app
from blog.db import get_db
from blog.maintenance import init_db, migration_scripts
from blog.models import Base, Post

from .blogs import init_blog
from .project import ADD_AUTHOR, REVISIONS
from .snapshot import current_revision, state, titles


def legacy_columns(engine):
    """Every post, as the columns the blog had before migrations."""
    with engine.connect() as connection:
        return connection.execute(select(legacy_post).order_by(legacy_post.c.id)).all()


def test_history_has_exactly_one_head(alembic_cfg):
    assert len(ScriptDirectory.from_config(alembic_cfg).get_heads()) == 1


def test_revisions_import_nothing_from_the_blog(alembic_cfg):
    for revision in REVISIONS:
        source = Path(revision.path).read_text()
        assert "import blog" not in source and "from blog" not in source


def test_create_users_table_keeps_every_post(alembic_cfg, legacy_db):
    posts = legacy_columns(legacy_db)
    first = REVISIONS[0]
    assert first.doc == "Create users table"

    command.upgrade(alembic_cfg, first.revision)
    columns = {c["name"]: c for c in inspect(legacy_db).get_columns("user")}
    assert list(columns) == ["id", "username", "password_hash", "created"]
    assert not columns["username"]["nullable"]
    assert inspect(legacy_db).get_unique_constraints("user")[0]["column_names"] == ["username"]
    assert legacy_columns(legacy_db) == posts

    command.downgrade(alembic_cfg, "-1")
    assert not inspect(legacy_db).has_table("user")
    assert legacy_columns(legacy_db) == posts
    assert current_revision(legacy_db) is None

    command.upgrade(alembic_cfg, "head")
    assert inspect(legacy_db).has_table("user")
    assert legacy_columns(legacy_db) == posts


def test_username_is_unique_after_migration(alembic_cfg, legacy_db):
    command.upgrade(alembic_cfg, "head")
    user = reflected(legacy_db, "user")
    alice = {"username": "alice", "password_hash": "x", "created": datetime(2024, 1, 1)}
    with legacy_db.begin() as connection:
        connection.execute(user.insert(), alice)
    with pytest.raises(IntegrityError), legacy_db.begin() as connection:
        connection.execute(user.insert(), alice)


def reflected(engine, name):
    return Table(name, MetaData(), autoload_with=engine)


def test_upgrade_head_on_a_migrated_database_changes_nothing(alembic_cfg, legacy_db):
    command.upgrade(alembic_cfg, "head")
    before = state(legacy_db)
    command.upgrade(alembic_cfg, "head")
    assert state(legacy_db) == before


def test_new_revision_follows_the_head(project, runner):
    ini = project / "alembic.ini"
    head = ScriptDirectory.from_config(Config(ini)).get_current_head()

    result = runner("-m", "alembic", "-c", ini, "revision", "-m", "Add tags to posts")

    assert result.returncode == 0, result.stderr
    script = ScriptDirectory.from_config(Config(ini))
    assert len(script.get_heads()) == 1
    new = script.get_revision(script.get_current_head())
    assert new.doc == "Add tags to posts"
    assert new.down_revision == head
    assert new.path.endswith("_add_tags_to_posts.py")
    source = Path(new.path).read_text()
    assert "def upgrade() -> None:" in source and "def downgrade() -> None:" in source


def test_migrated_database_matches_the_models(alembic_cfg, legacy_db):
    command.upgrade(alembic_cfg, "head")
    with legacy_db.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_init_database_matches_the_models(database_url):
    app = create_app({"DATABASE_URL": database_url, "SECRET_KEY": "test", "CHECK_DATABASE": False})
    engine = app.extensions["db_engine"]
    init_db(engine, migration_scripts(app))
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    assert current_revision(engine) == migration_scripts(app).get_current_head()


def test_add_author_keeps_posts_and_users(alembic_cfg, legacy_db):
    posts = legacy_columns(legacy_db)
    command.upgrade(alembic_cfg, ADD_AUTHOR)
    with legacy_db.connect() as connection:
        assert connection.execute(text("SELECT author_id FROM post")).scalars().all() == [None] * 3
    assert legacy_columns(legacy_db) == posts
    assert [index["column_names"] for index in inspect(legacy_db).get_indexes("post")] == [
        ["author_id"]
    ]

    user, post = reflected(legacy_db, "user"), reflected(legacy_db, "post")
    with legacy_db.begin() as connection:
        connection.execute(
            user.insert(),
            {
                "id": 1,
                "username": "alice",
                "password_hash": "hash",
                "created": datetime(2024, 1, 1),
            },
        )
        connection.execute(
            post.insert(),
            {"title": "By Alice", "body": "Hers.", "created": datetime(2024, 1, 2), "author_id": 1},
        )
        users = connection.execute(select(user)).all()
    posts = legacy_columns(legacy_db)

    command.downgrade(alembic_cfg, "-1")
    assert [c["name"] for c in inspect(legacy_db).get_columns("post")] == [
        "id",
        "title",
        "body",
        "created",
    ]
    assert inspect(legacy_db).get_indexes("post") == []
    assert legacy_columns(legacy_db) == posts
    with legacy_db.connect() as connection:
        assert connection.execute(select(user)).all() == users

    command.upgrade(alembic_cfg, "head")
    assert legacy_columns(legacy_db) == posts


@pytest.mark.sqlite_only
def test_add_author_does_not_copy_the_post_table_on_sqlite(alembic_cfg, legacy_db):
    command.upgrade(alembic_cfg, REVISIONS[0].revision)
    rootpage = text("SELECT rootpage FROM sqlite_master WHERE name = 'post'")
    with legacy_db.connect() as connection:
        before = connection.execute(rootpage).scalar()
    command.upgrade(alembic_cfg, "+1")
    with legacy_db.connect() as connection:
        assert connection.execute(rootpage).scalar() == before  # the same table, not a copy
        sql = connection.execute(text("SELECT sql FROM sqlite_master WHERE name = 'post'")).scalar()
    assert "author_id INTEGER REFERENCES user (id)" in sql


def test_blog_enforces_foreign_keys(app):
    with app.app_context():
        db = get_db()
        db.add(
            Post(
                title="Orphan", body="No such author.", author_id=999, created=datetime(2024, 1, 1)
            )
        )
        with pytest.raises(IntegrityError):
            db.commit()
        db.rollback()
        assert db.scalars(select(Post.title).where(Post.title == "Orphan")).all() == []


def test_check_command_finds_the_models_in_a_database_made_either_way(
    database_url, legacy_db, project, runner
):
    env = {"BLOG_DATABASE_URL": database_url}
    result = runner(project / "run.py", "check", env=env)
    assert result.returncode == 1
    missing = [
        "table user",
        "table user_session",
        "table login_failure",
        "column post.author_id",
        "index ix_post_author_id",
        "foreign key fk_post_author_id_user",
        "index ix_user_username_key",
        "index ix_user_session_token_hash",
        "index ix_user_session_user_id",
        "index ix_login_failure_username_key",
        "index ix_login_failure_address",
    ]
    assert sorted(result.stdout.splitlines()) == sorted(
        f"{what} is in the models but not in the database" for what in missing
    )
    assert "differs from the models in 11 ways" in result.stderr

    upgrade = runner("-m", "alembic", "-c", project / "alembic.ini", "upgrade", "head", env=env)
    assert upgrade.returncode == 0, upgrade.stderr
    result = runner(project / "run.py", "check", env=env)
    assert result.returncode == 0
    assert result.stdout.startswith(f"{legacy_db.url} matches the models")


# A change each backend can make, and how `run.py check` names it.
SCHEMA_CHANGE = {
    "sqlite": (
        "DROP INDEX ix_post_author_id",
        "index ix_post_author_id is in the models but not in the database",
    ),
    "postgresql": (
        "ALTER TABLE post ALTER COLUMN title TYPE VARCHAR(100)",
        "column post.title: type is VARCHAR(100) in the database, VARCHAR(200) in the models",
    ),
    "mysql": (
        "ALTER TABLE post MODIFY title VARCHAR(100) NOT NULL",
        "column post.title: type is VARCHAR(100) in the database, VARCHAR(200) in the models",
    ),
}


def test_check_command_names_every_difference(backend, database_url, project, runner):
    env = {"BLOG_DATABASE_URL": database_url}
    init_blog(project, env)
    change, difference = SCHEMA_CHANGE[backend]
    with create_engine(database_url).begin() as connection:
        connection.execute(text("ALTER TABLE post ADD COLUMN tags VARCHAR(50)"))
        connection.execute(text("CREATE TABLE comment (id INTEGER PRIMARY KEY)"))
        connection.execute(text(change))
    result = runner(project / "run.py", "check", env=env)

    assert result.returncode == 1
    assert sorted(result.stdout.splitlines()) == sorted(
        [
            "table comment is in the database but not in the models",
            "column post.tags is in the database but not in the models",
            difference,
        ]
    )
    assert "differs from the models in 3 ways" in result.stderr


def test_names_that_differ_only_in_case_stop_the_upgrade(alembic_cfg, legacy_db, backend):
    command.upgrade(alembic_cfg, ADD_AUTHOR)
    user = reflected(legacy_db, "user")
    names = ["Alice", "bob", "ALICE", "alice"]
    with legacy_db.begin() as connection:
        for id, name in enumerate(names[:2], start=1):
            connection.execute(user.insert(), account(id, name))
    if backend == "mysql":
        # MariaDB's case-insensitive collation refused them from the start.
        with pytest.raises(IntegrityError), legacy_db.begin() as connection:
            connection.execute(user.insert(), account(3, "ALICE"))
    else:
        with legacy_db.begin() as connection:
            for id, name in enumerate(names[2:], start=3):
                connection.execute(user.insert(), account(id, name))
        before = state(legacy_db)
        with pytest.raises(CommandError) as refusal:
            command.upgrade(alembic_cfg, "head")
        assert str(refusal.value).startswith(
            "usernames that differ only in case: Alice, ALICE, alice. Rename all but one"
        )
        assert state(legacy_db) == before
        with legacy_db.begin() as connection:
            for id, name in ((3, "ALICE_B"), (4, "alice_c")):
                connection.execute(user.update().where(user.c.id == id).values(username=name))

    command.upgrade(alembic_cfg, "head")
    with pytest.raises(IntegrityError), legacy_db.begin() as connection:
        connection.execute(reflected(legacy_db, "user").insert(), account(9, "BOB"))


def account(id: int, username: str) -> dict:
    return {
        "id": id,
        "username": username,
        "password_hash": "hash",
        "created": datetime(2024, 1, 1),
    }


def test_the_lessons_first_blog_is_made_where_alembic_ini_looks(project, runner):
    made = runner(project / "before_migrations.py")  # typed from another folder
    assert made.returncode == 0, made.stderr
    db = project / "blog.db"
    assert made.stdout == f"Created {db} as the blog made it before migrations, with 3 posts\n"
    assert titles(db) == [post["title"] for post in LESSON_POSTS]
    # The posts table alone, no alembic_version: what `alembic upgrade head` starts from.
    assert inspect(create_engine(f"sqlite:///{db}")).get_table_names() == ["post"]
    again = runner(project / "before_migrations.py")
    assert (again.returncode, again.stderr) == (1, f"error: {db} exists; move it away first\n")
    assert titles(db) == [post["title"] for post in LESSON_POSTS]


def test_the_lessons_first_blog_is_not_made_beside_the_last_writes_of_a_removed_one(
    project, runner
):
    wal = project / "blog.db-wal"
    wal.write_bytes(b"the last writes of a blog.db that was moved away")
    made = runner(project / "before_migrations.py")
    assert made.returncode == 1
    assert "blog.db-wal is still beside it" in made.stderr
    assert not (project / "blog.db").exists()
    assert wal.read_bytes() == b"the last writes of a blog.db that was moved away"
