import sqlite3

import pytest

from alembic import command
from sqlalchemy import create_engine, func, select

from blog.db import DatabaseProblem, get_db
from blog.maintenance import back_up, init_db, migration_scripts
from blog.models import Post

from .snapshot import rows


@pytest.mark.sqlite_only  # PostgreSQL reports a missing column as a programming error
def test_database_mid_migration_gives_503_and_writes_nothing(app, client, auth, alembic_cfg):
    auth.login()
    token = auth.csrf_token()
    command.downgrade(alembic_cfg, "-1")  # the blog's code now expects a column that is gone

    for response in (client.get("/"),
                     client.post("/create", data={"title": "t", "body": "b", "csrf_token": token})):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert "The database is busy" in response.get_data(as_text=True)

    command.upgrade(alembic_cfg, "head")
    with app.app_context():
        assert get_db().scalar(select(func.count()).select_from(Post)) == 2
    assert client.get("/").status_code == 200


def test_error_pages_keep_their_headers(client):
    response = client.get("/auth/logout")
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    assert "405 Method Not Allowed" in response.get_data(as_text=True)


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
        with pytest.raises(DatabaseProblem, match=r"already has tables \(alembic_version, post, "
                                                  r"user\); drop them yourself after a backup"):
            init_db(engine, migration_scripts(app))
        assert rows(engine) == before
