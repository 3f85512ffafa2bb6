"""python run.py copy: moving a blog's users and posts to another database."""

from datetime import datetime

import pytest
from sqlalchemy import create_engine, insert, select

from blog import create_app
from blog.db import get_db
from blog.maintenance import init_db, migration_scripts
from blog.models import Post, User

from .conftest import PASSWORD_HASH
from .snapshot import rows
from .test_run import make_legacy_blog


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
    assert "Copied every user and post from" in result.stdout
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


def test_copy_refuses_a_target_with_posts(project, runner, source_url, database_url):
    assert runner(project / "run.py", "copy", source_url, database_url).returncode == 0
    before = blog_rows(database_url)
    result = runner(project / "run.py", "copy", source_url, database_url)
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
    result = runner(project / "run.py", "copy", source_url, database_url + "?password=hunter2")
    assert result.returncode == 0, result.stderr
    assert f"to {database_url}\n" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr
