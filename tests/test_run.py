import re
import socket
import sqlite3
import sys

import pytest

from .blogs import init_blog, make_legacy_blog, upgrade_blog
from .server import free_port, serving, wait_for_page
from .snapshot import titles, version


def test_init_creates_the_database_at_head(project, runner):
    result = runner(project / "run.py", "init")
    assert result.returncode == 0, result.stderr
    assert f"Created sqlite:///{project / 'blog.db'} at the latest revision" in result.stdout
    assert "Backed up" not in result.stdout

    current = runner("-m", "alembic", "-c", project / "alembic.ini", "current")
    assert current.stdout.strip().endswith("(head)")
    upgrade = runner("-m", "alembic", "-c", project / "alembic.ini", "upgrade", "head")
    assert upgrade.returncode == 0
    assert "Running upgrade" not in upgrade.stderr


def test_init_refuses_a_file_that_is_not_a_database(project, runner):
    db = project / "blog.db"
    db.write_text("my shopping list\n" * 100)
    result = runner(project / "run.py", "init")
    assert result.returncode == 1
    assert result.stderr == f"error: file is not a database (sqlite:///{db})\n"
    assert db.read_text() == "my shopping list\n" * 100
    assert not (project / "blog.db.bak").exists()


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda db: None, "does not exist; run `python run.py init`"),
        (make_legacy_blog, "has no migration revision"),
        (lambda db: db.write_bytes(b""), "has no blog tables; run `python run.py init`"),
    ],
)
def test_serve_refuses_a_database_it_cannot_use(project, runner, prepare, message):
    prepare(project / "blog.db")
    result = runner(project / "run.py")
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


ENTRY_POINTS = {
    "run.py": ["run.py"],
    "flask run": ["-m", "flask", "--app", "blog", "run", "--port", "{port}"],
    "granian": [
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--factory",
        "--port",
        "{port}",
        "blog:create_app",
    ],
}


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda db: None, "blog.db does not exist; run `python run.py init`"),
        (make_legacy_blog, "has no migration revision"),
    ],
    ids=["missing", "before migrations"],
)
def test_every_way_of_serving_refuses_the_same_way(project, runner, entry_point, prepare, message):
    prepare(project / "blog.db")
    port = str(free_port())
    args = [arg.replace("{port}", port) for arg in ENTRY_POINTS[entry_point]]
    result = runner(*args, cwd=project, timeout=60)
    assert result.returncode != 0
    assert message in result.stderr
    if entry_point != "granian":  # granian logs the traceback of an app that fails to load
        assert len(result.stderr.strip().splitlines()) == 1


def test_serve_refuses_a_database_behind_head(project, runner):
    make_legacy_blog(project / "blog.db")
    upgrade_blog(project, "+1")
    result = runner(project / "run.py")
    assert result.returncode == 1
    assert "behind this code's" in result.stderr and "run `alembic upgrade head`" in result.stderr


def test_serve_refuses_a_revision_the_code_does_not_know(project, runner):
    init_blog(project)
    with sqlite3.connect(project / "blog.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'f00dcafe'")
    result = runner(project / "run.py")
    assert result.returncode == 1
    assert "revision f00dcafe, which this code does not know" in result.stderr


def test_unknown_command_is_a_usage_error(project, runner):
    result = runner(project / "run.py", "destroy")
    assert result.returncode == 2
    assert "invalid choice: 'destroy'" in result.stderr


def test_help_lists_the_commands(project, runner):
    result = runner(project / "run.py", "--help")
    assert result.returncode == 0
    assert "init" in result.stdout and "--port" in result.stdout


def test_blog_and_alembic_use_the_same_file_from_any_folder(project, runner, tmp_path):
    elsewhere = tmp_path / "another" / "folder"
    elsewhere.mkdir(parents=True)
    make_legacy_blog(project / "blog.db")

    upgrade = runner(
        "-m", "alembic", "-c", project / "alembic.ini", "upgrade", "head", cwd=elsewhere
    )
    assert upgrade.returncode == 0, upgrade.stderr
    assert len(version(project / "blog.db")) == 1
    assert list(elsewhere.iterdir()) == []  # no stray blog.db beside the user

    init = runner(project / "run.py", "init")
    assert f"sqlite:///{project / 'blog.db'}" in init.stdout


def test_blog_database_url_overrides_alembic_ini_for_both(project, runner, tmp_path):
    other = tmp_path / "other.db"
    env = {"BLOG_DATABASE_URL": f"sqlite:///{other}"}
    make_legacy_blog(other)

    refused = runner(project / "run.py", env=env)
    assert "has no migration revision" in refused.stderr  # it looked at other.db
    assert (
        runner(
            "-m", "alembic", "-c", project / "alembic.ini", "upgrade", "head", env=env
        ).returncode
        == 0
    )
    assert len(version(other)) == 1
    init = runner(project / "run.py", "init", env=env)
    assert f"Backed up the old database to {other}.bak" in init.stdout
    assert not (project / "blog.db").exists()


def test_serve_serves_the_blog(project):
    make_legacy_blog(project / "blog.db")
    upgrade_blog(project)
    page, log = serve(project)
    assert "Old post" in page and "unknown author" in page


def test_serve_runs_a_production_server_with_the_workers_asked_for(project):
    init_blog(project)
    page, log = serve(project, "--workers", "3", "--threads", "2")
    assert "<h1>Posts</h1>" in page
    assert "development server" not in log
    assert "Listening at" in log
    assert len(re.findall(r"Started worker-\d+$", log, re.MULTILINE)) == 3


def test_serve_debug_runs_flasks_debugger(project):
    init_blog(project)
    page, log = serve(project, "--debug")
    assert "<h1>Posts</h1>" in page
    assert "Debugger is active!" in log


def serve(project, *options):
    """The index page that `python run.py` serves, and what it printed meanwhile."""
    command = [sys.executable, project / "run.py", *options, "--port"]
    with serving(command, project / "server.log") as base_url:
        page = wait_for_page(base_url + "/")
    return page, (project / "server.log").read_text()


def test_serve_on_a_busy_port_says_so_at_once(project, runner):
    init_blog(project)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = runner(project / "run.py", "--port", port, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: cannot serve on 127.0.0.1:{port}: Address already in use; "
        "choose another port with --port (make run PORT=...)"
    ]


def test_init_leaves_a_file_sized_for_what_it_holds(project, runner):
    db = project / "blog.db"
    assert runner(project / "run.py", "init").returncode == 0
    with sqlite3.connect(db) as connection:
        connection.executemany(
            "INSERT INTO post (title, body, created) VALUES ('filler', ?, '2024-01-01')",
            (("x" * 1000,) for _ in range(20_000)),
        )
    assert db.stat().st_size > 20_000_000
    assert runner(project / "run.py", "init").returncode == 0
    assert db.stat().st_size < 200_000
    assert len(titles(project / "blog.db.bak")) == 20_000


def test_init_names_a_wal_left_by_a_removed_database(project, runner):
    assert runner(project / "run.py", "init").returncode == 0
    (project / "blog.db-wal").write_bytes(b"the last writes of a removed blog.db")
    (project / "blog.db").unlink()
    result = runner(project / "run.py", "init")
    assert result.returncode == 1
    assert "blog.db-wal is still beside it" in result.stderr
    assert "move blog.db-wal and blog.db-shm away" in result.stderr
    assert not (project / "blog.db").exists()


def test_init_makes_a_blog_beside_an_empty_wal(project, runner):
    # What a blog.db removed after a clean stop may leave: a -wal with no writes in it.
    (project / "blog.db-wal").write_bytes(b"")
    result = runner(project / "run.py", "init")
    assert result.returncode == 0, result.stderr
    assert titles(project / "blog.db") == []


def test_check_reports_what_sqlites_own_checks_find(project, runner):
    init_blog(project)
    result = runner(project / "run.py", "check")
    assert result.returncode == 0
    assert "quick_check and foreign_key_check find it whole" in result.stdout
    with sqlite3.connect(project / "blog.db") as connection:
        # foreign_keys is off in a plain sqlite3 connection: a post by nobody.
        connection.execute(
            "INSERT INTO post (title, body, created, author_id) VALUES ('x', 'y', '2024-01-01', 42)"
        )
    result = runner(project / "run.py", "check")
    assert result.returncode == 1
    assert result.stdout.strip() == "post row 1 refers to a row of user that does not exist"
    assert "failed SQLite's integrity checks in 1 way;" in result.stderr


def test_serving_refuses_a_damaged_database_naming_the_newest_good_backup(project, runner):
    init_blog(project)
    with sqlite3.connect(project / "blog.db") as connection:
        connection.executemany(
            "INSERT INTO post (title, body, created) VALUES (?, ?, '2024-01-01')",
            ((f"post {i}", "x" * 500) for i in range(2000)),
        )
    assert runner(project / "run.py", "init").returncode == 0  # blog.db.bak: whole, 2,000 posts
    with sqlite3.connect(project / "blog.db") as connection:
        connection.executemany(
            "INSERT INTO post (title, body, created) VALUES (?, ?, '2024-01-01')",
            ((f"post {i}", "x" * 500) for i in range(2000)),
        )
        connection.commit()
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(project / "blog.db", "r+b") as database:
        database.seek(8 * 4096)
        database.write(b"\xff" * 4096)  # a page of the post table overwritten

    result = runner(project / "run.py", "--port", "0", timeout=30)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert len(result.stderr) < 600  # a line a person reads, not SQLite's every finding
    assert f"{project / 'blog.db'} is damaged (" in result.stderr
    advice = f"python run.py restore {project / 'blog.db.bak'}"
    assert f"`{advice}`" in result.stderr

    # A backup that cannot be restored leaves the damaged file where it was.
    damaged = (project / "blog.db").read_bytes()
    (project / "notes.db").touch()
    refused = runner(project / "run.py", "restore", "notes.db", cwd=project)
    assert refused.returncode == 1 and "it holds no blog" in refused.stderr
    assert (project / "blog.db").read_bytes() == damaged
    assert not list(project.glob("blog.db.damaged*"))

    # The advice works as written, and the damaged file is kept aside.
    restored = runner(*advice.split()[1:], cwd=project)
    assert restored.returncode == 0, restored.stderr
    aside = project / "blog.db.damaged"
    assert aside.read_bytes() == damaged and f"aside to {aside}" in restored.stdout
    assert len(titles(project / "blog.db")) == 2000
    assert runner(project / "run.py", "check").returncode == 0
