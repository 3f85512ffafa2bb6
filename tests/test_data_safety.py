"""No data is dropped without a copy: downgrades that would drop data, full
disks, odd paths, read-only files and folders, and kills mid-migration."""

import contextlib
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from contextlib import closing

import pytest
from sqlalchemy import create_engine, inspect

from blog import instance_secret_key

from .blogs import (
    add_accounts,
    add_filler_posts,
    copy_blog,
    init_blog,
    make_legacy_blog,
    upgrade_blog,
)
from .project import REVISIONS, alembic
from .server import serving
from .snapshot import current_revision, files_beside, rows, state, titles
from .webclient import Browser


def test_downgrade_that_would_drop_data(app, backend, database_url, project, runner):
    env = {"BLOG_DATABASE_URL": database_url}
    engine = app.extensions["db_engine"]
    before = state(engine)

    # Down to revision 1: revision 2's downgrade drops post.author_id.
    first = REVISIONS[0].revision
    result = alembic(runner, project, "downgrade", first, env=env)
    if backend == "sqlite":
        assert result.returncode == 0, result.stderr
        assert "Backed up" in result.stderr
        assert rows(create_engine(f"{database_url}.bak")) == before["rows"]
        return
    # A server's data is the server's to dump: refuse before changing anything.
    assert result.returncode != 0
    assert (
        "FAILED: this downgrade would drop column post.author_id (set in 1 row); take a "
        "dump of the database first, then run again with "
        "`alembic -x drop_data=yes downgrade ...`"
    ) in result.stdout
    assert state(engine) == before
    assert alembic(runner, project, "downgrade", "base", env=env).returncode != 0
    assert state(engine) == before

    result = alembic(runner, project, "-x", "drop_data=yes", "downgrade", first, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert current_revision(engine) == REVISIONS[0].revision


def test_downgrade_with_nothing_to_lose_just_runs(backend, database_url, project, runner):
    env = {"BLOG_DATABASE_URL": database_url}
    init_blog(project, env)
    result = alembic(runner, project, "downgrade", "base", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert current_revision(create_engine(database_url)) is None


def test_upgrade_on_an_empty_database_changes_nothing(backend, database_url, project, runner):
    if backend == "sqlite":
        sqlite3.connect(database_url.removeprefix("sqlite:///")).close()  # an empty file
    result = alembic(runner, project, "upgrade", "head", env={"BLOG_DATABASE_URL": database_url})

    assert result.returncode != 0
    failure = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert failure == [
        f"FAILED: {create_engine(database_url).url} holds no blog to upgrade (it has no post "
        "table); create the blog at the latest revision with `python run.py init`"
    ]
    # On a database server the first revision's DDL would have committed.
    assert inspect(create_engine(database_url)).get_table_names() == []


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB filesystem of the test's own, to run out of space on."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mount_point],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", mount_point], check=True)


def fill(disk, leave):
    """Take all the free space on the disk but `leave` bytes."""
    free = os.statvfs(disk)
    (disk / "filler").write_bytes(b"\0" * max(free.f_bavail * free.f_frsize - leave, 0))


@pytest.fixture
def blog_on_small_disk(small_disk, project):
    db = small_disk / "blog.db"
    env = {"BLOG_DATABASE_URL": f"sqlite:///{db}"}
    init_blog(project, env)
    add_filler_posts(db, 5_000)  # over 2 MiB: there is no room for a second copy
    add_accounts(db)
    return db, env


def assert_refused_for_lack_of_space(result, db, before):
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "database or disk is full" in output, output
    assert "Traceback" not in output and "_alembic_tmp" not in output
    assert state(create_engine(f"sqlite:///{db}")) == before
    assert files_beside(db) == ["blog.db"]


def test_downgrade_without_room_for_its_backup(blog_on_small_disk, project, runner):
    db, env = blog_on_small_disk
    before = state(create_engine(f"sqlite:///{db}"))
    result = alembic(runner, project, "downgrade", "-1", env=env)
    assert_refused_for_lack_of_space(result, db, before)


def test_init_without_room_for_its_backup(blog_on_small_disk, project, runner):
    db, env = blog_on_small_disk
    before = state(create_engine(f"sqlite:///{db}"))
    result = runner(project / "run.py", "init", env=env)
    assert_refused_for_lack_of_space(result, db, before)


def test_upgrade_on_a_full_disk(small_disk, project, runner):
    db = small_disk / "blog.db"
    env = {"BLOG_DATABASE_URL": f"sqlite:///{db}"}
    make_legacy_blog(db)
    add_filler_posts(db, 3_000)
    before = state(create_engine(f"sqlite:///{db}"))
    fill(small_disk, leave=16 * 1024)
    result = alembic(runner, project, "upgrade", "head", env=env)
    (small_disk / "filler").unlink()  # room for the test to read the database again
    assert_refused_for_lack_of_space(result, db, before)


@pytest.mark.parametrize(
    "make",
    [os.mkfifo, lambda path: os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3)), os.mkdir],
    ids=["fifo", "device", "folder"],
)
@pytest.mark.parametrize("command", [["init"], [], ["restore", "blog.db.bak"]])
def test_a_path_that_is_not_a_regular_file(project, runner, tmp_path, make, command):
    odd = tmp_path / "odd"
    make(odd)
    env = {"BLOG_DATABASE_URL": f"sqlite:///{odd}"}
    init_blog(project)  # a backup to restore
    (project / "blog.db").rename(project / "blog.db.bak")
    # Long enough for a loaded machine, short enough to catch SQLite hanging on a FIFO.
    result = runner(project / "run.py", *command, env=env, cwd=project, timeout=60)
    assert result.returncode == 1
    assert result.stderr == f"error: {odd} is not a regular file, so it cannot be a database\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("odd")) == ["odd"]


@contextlib.contextmanager
def read_only(path):
    """A file or folder on a read-only bind mount of itself, as long as the block lasts."""
    mounted = subprocess.run(
        f"mount --bind {path} {path} && mount -o remount,bind,ro {path}",
        shell=True,
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot make {path} read-only here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=True)


@pytest.fixture
def read_only_blog(blog_with_accounts):
    """blog.db read-only; its folder stays writable."""
    with read_only(blog_with_accounts) as db:
        yield db


def test_init_on_a_read_only_file_changes_nothing(read_only_blog, project, runner):
    before = state(create_engine(f"sqlite:///{read_only_blog}"))
    for _ in range(2):
        result = runner(project / "run.py", "init")
        assert result.returncode == 1
        assert result.stderr == f"error: {read_only_blog} is read-only; make it writable\n"
        assert files_beside(read_only_blog) == ["blog.db"]  # no backup left on any try
    assert state(create_engine(f"sqlite:///{read_only_blog}")) == before


def posts_differ(db, before, columns):
    """How many posts differ in these columns between db and before, as SQLite compares them."""
    with closing(sqlite3.connect(db)) as connection:
        connection.execute("ATTACH ? AS before", (str(before),))
        now, then = f"SELECT {columns} FROM main.post", f"SELECT {columns} FROM before.post"
        return sum(
            connection.execute(f"SELECT count(*) FROM ({a} EXCEPT {b})").fetchone()[0]
            for a, b in ((now, then), (then, now))
        )


@pytest.mark.parametrize("after", [0.2, 0.5, 0.9, 1.4])
def test_a_killed_downgrade_leaves_the_old_or_the_new_revision(project, runner, tmp_path, after):
    db = project / "blog.db"
    init_blog(project)
    add_filler_posts(db, 200_000)
    add_accounts(db)
    before = tmp_path / "before.db"
    copy_blog(db, before)

    # Down to revision 1: revision 2's downgrade rewrites every post.
    first = REVISIONS[0].revision
    migration = subprocess.Popen(
        [sys.executable, "-m", "alembic", "-c", project / "alembic.ini", "downgrade", first],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(after)
    migration.send_signal(signal.SIGKILL)
    migration.wait()

    with closing(sqlite3.connect(db)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    revision = current_revision(create_engine(f"sqlite:///{db}"))
    assert revision in (REVISIONS[-1].revision, first)  # one transaction: all or nothing
    assert posts_differ(db, before, "id, title, body, created") == 0
    if revision == REVISIONS[-1].revision:
        assert posts_differ(db, before, "*") == 0


def sqlite_schema(db):
    """Every table and index as SQLite keeps its CREATE statement, spacing aside."""
    with closing(sqlite3.connect(db)) as connection:
        return {
            name: " ".join(sql.split())
            for name, sql in connection.execute(
                "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"
            )
        }


def page_count(db):
    with closing(sqlite3.connect(db)) as connection:
        return connection.execute("PRAGMA page_count").fetchone()[0]


@pytest.fixture(params=["revisions", "init"])
def blog_with_authors(request, project):
    """A blog.db made by the revisions or by `run.py init`, with 20,000 posts."""
    db = project / "blog.db"
    if request.param == "init":
        init_blog(project)
    else:
        make_legacy_blog(db)
        upgrade_blog(project)
    add_filler_posts(db, 20_000)
    add_accounts(db)
    return db


def test_init_writes_the_schema_the_revisions_build(project, runner, tmp_path):
    migrated = tmp_path / "migrated.db"
    make_legacy_blog(migrated)
    upgrade_blog(project, env={"BLOG_DATABASE_URL": f"sqlite:///{migrated}"})
    assert runner(project / "run.py", "init").returncode == 0
    assert sqlite_schema(project / "blog.db") == sqlite_schema(migrated)


def test_downgrade_drops_the_author_without_copying_the_posts(blog_with_authors, project, runner):
    db = blog_with_authors
    pages, titles_before = page_count(db), titles(db)
    result = alembic(runner, project, "downgrade", REVISIONS[0].revision)
    assert result.returncode == 0, result.stderr
    assert "copying the post table" not in result.stderr
    assert page_count(db) <= pages  # a copy would have doubled the table
    assert titles(db) == titles_before
    with closing(sqlite3.connect(db)) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(post)")]
    assert columns == ["id", "title", "body", "created"]


def test_downgrade_copies_the_posts_when_a_table_constraint_names_the_author(project, runner):
    # As `run.py init` wrote the post table before it wrote the column's own REFERENCES.
    db = project / "blog.db"
    init_blog(project)
    with closing(sqlite3.connect(db)) as connection:
        connection.executescript("""
            DROP TABLE post;
            CREATE TABLE post (id INTEGER NOT NULL, title VARCHAR(200) NOT NULL,
                body TEXT NOT NULL, created DATETIME NOT NULL, author_id INTEGER,
                PRIMARY KEY (id),
                CONSTRAINT fk_post_author_id_user FOREIGN KEY(author_id) REFERENCES user (id));
            CREATE INDEX ix_post_author_id ON post (author_id);
        """)
    add_filler_posts(db, 3)
    add_accounts(db)
    titles_before = titles(db)
    result = alembic(runner, project, "downgrade", REVISIONS[0].revision)
    assert result.returncode == 0, result.stderr
    assert (
        "a table-level FOREIGN KEY names post.author_id: copying the post table without it"
        in result.stderr
    )
    assert titles(db) == titles_before


def post_until_refused(writer):
    """Post until the blog stops acknowledging; its last answer."""
    for n in range(2000):
        status, headers, page = writer.request(
            "/create", {"title": f"post {n}", "body": "x" * 4000}
        )
        if status != 302:
            return status, headers, page
    raise AssertionError("the blog never ran out of room")


def test_a_full_disk_is_named_not_called_busy(blog_on_small_disk, project):
    db, env = blog_on_small_disk
    command = [sys.executable, project / "run.py", "--port"]
    with serving(command, project / "server.log", env) as base_url:
        # Signed up while there is room: signing up writes too.
        writer = Browser(base_url)
        writer.sign_up("author")
        fill(db.parent, leave=64 * 1024)
        status, headers, page = post_until_refused(writer)
        reading = writer.request("/")
    assert status == 503
    assert "Retry-After" not in headers  # waiting will not make room
    assert "the disk that holds the database is full" in page
    assert "busy" not in page
    # The page says what still works, and it does.
    assert "cannot store anything new" in page and "Reading the blog still works" in page
    assert reading[0] == 200
    log = (project / "server.log").read_text()
    assert "ERROR" in log and "the disk that holds the database is full" in log


def test_serving_refuses_a_read_only_database(read_only_blog, project, runner):
    result = runner(project / "run.py")
    assert result.returncode == 1
    assert result.stderr == f"error: {read_only_blog} is read-only; make it writable\n"


@pytest.fixture
def read_only_folder(project):
    """The project's folder, holding blog.db and the instance's key, mounted read-only."""
    init_blog(project)
    instance_secret_key(project / "instance")  # as the blog's first start leaves it
    with read_only(project) as folder:
        yield folder


def test_a_read_only_folder_without_a_key_says_how_to_give_one(project, runner):
    init_blog(project)  # no instance/secret_key: the blog has never started here
    with read_only(project):
        result = runner(project / "run.py")
    assert result.returncode == 1
    assert result.stderr == (
        f"error: the blog cannot keep its secret key in {project / 'instance'} (the folder "
        f"{project} is read-only); set BLOG_SECRET_KEY, or make it writable\n"
    )


@pytest.mark.parametrize(
    "command",
    [["run.py"], ["run.py", "init"], ["alembic", "current"], ["alembic", "downgrade", "-1"]],
)
def test_every_command_names_a_read_only_folder(read_only_folder, runner, command):
    project = read_only_folder
    program, *args = command
    if program == "alembic":
        result = alembic(runner, project, *args)
    else:
        result = runner(project / program, *args)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"the folder {project} is read-only" in output, output
    assert "Traceback" not in output
