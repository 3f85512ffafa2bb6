"""Bad input at the edges: a clear message, a non-zero exit, and nothing changed."""

import sqlite3
from contextlib import closing

import pytest

from .blogs import init_blog, make_legacy_blog
from .project import alembic


def typed(runner, project, command, **kwargs):
    """Run what a user types: "alembic ..." or "run.py ..."."""
    program, *args = command.split()
    if program == "alembic":
        return alembic(runner, project, *args, **kwargs)
    return runner(project / program, *args, **kwargs)


def assert_one_line_error(result, message):
    output = result.stdout + result.stderr  # alembic says FAILED on stdout
    assert result.returncode != 0
    assert message in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["destroy"], "invalid choice: 'destroy'"),
        (["--colour"], "unrecognized arguments: --colour"),
        (["--port", "http"], "invalid int value: 'http'"),
        (["--workers", "0"], "argument --workers: must be a whole number, at least 1, not '0'"),
        (
            ["--threads", "many"],
            "argument --threads: must be a whole number, at least 1, not 'many'",
        ),
        (["init", "--force"], "unrecognized arguments: --force"),
    ],
)
def test_run_py_usage_errors_exit_2(project, runner, args, message):
    result = runner(project / "run.py", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (project / "blog.db").exists()


@pytest.mark.parametrize("command", [[], ["init"]])
def test_missing_alembic_ini(project, runner, command):
    (project / "alembic.ini").unlink()
    result = runner(project / "run.py", *command)
    assert_one_line_error(result, "alembic.ini is missing; it names the blog's database")
    assert not (project / "blog.db").exists()
    assert_one_line_error(alembic(runner, project, "current"), "FAILED: No 'script_location'")


@pytest.mark.parametrize("database", ["no/such/folder/blog.db", "a-file/blog.db"])
def test_database_in_a_folder_that_does_not_exist(project, runner, tmp_path, database):
    (tmp_path / "a-file").write_text("not a folder")
    env = {"BLOG_DATABASE_URL": f"sqlite:///{tmp_path / database}"}
    assert_one_line_error(runner(project / "run.py", "init", env=env), "is not a folder")
    assert_one_line_error(runner(project / "run.py", env=env), "does not exist")
    assert_one_line_error(
        alembic(runner, project, "upgrade", "head", env=env),
        "does not exist; run `python run.py init`",
    )
    assert not (tmp_path / database).exists()


def test_database_that_cannot_be_written(project, runner):
    # Even root cannot create a file in /proc.
    env = {"BLOG_DATABASE_URL": "sqlite:////proc/blog.db"}
    result = runner(project / "run.py", "init", env=env)
    assert_one_line_error(result, "error: unable to open database file (sqlite:////proc/blog.db)")


@pytest.mark.parametrize(
    "command",
    ["run.py", "run.py init", "alembic upgrade head", "alembic downgrade -1", "alembic current"],
)
def test_file_that_is_not_a_database(project, runner, command):
    db = project / "blog.db"
    db.write_text("my shopping list\n" * 100)
    assert_one_line_error(typed(runner, project, command), "file is not a database")
    assert db.read_text() == "my shopping list\n" * 100
    assert sorted(p.name for p in project.iterdir() if p.name.startswith("blog.db")) == ["blog.db"]


@pytest.mark.parametrize(
    "args",
    [["upgrade", "cafe1234"], ["downgrade", "cafe1234"], ["upgrade", "+5"], ["downgrade", "-5"]],
)
def test_migrating_to_a_revision_that_does_not_exist(project, runner, args):
    make_legacy_blog(project / "blog.db")
    alembic(runner, project, "upgrade", "+1")
    before = (project / "blog.db").read_bytes()
    assert_one_line_error(alembic(runner, project, *args), "FAILED:")
    assert (project / "blog.db").read_bytes() == before


@pytest.mark.parametrize("args", [["upgrade", "head"], ["downgrade", "-1"]])
def test_migrating_a_database_stamped_with_an_unknown_revision(project, runner, args):
    init_blog(project)
    with closing(sqlite3.connect(project / "blog.db")) as connection, connection:
        connection.execute("UPDATE alembic_version SET version_num = 'f00dcafe'")
    before = (project / "blog.db").read_bytes()
    result = alembic(runner, project, *args)
    assert_one_line_error(result, "Can't locate revision identified by 'f00dcafe'")
    assert (project / "blog.db").read_bytes() == before


@pytest.mark.parametrize("command", [["run.py"], ["-m", "alembic", "current"]])
def test_database_whose_driver_is_not_installed(project, runner, command):
    env = {"BLOG_DATABASE_URL": "mssql+pymssql://someone:s3cret@127.0.0.1/blog"}
    if command == ["run.py"]:
        result = runner(project / "run.py", env=env)
    else:
        result = alembic(runner, project, "current", env=env)
    assert_one_line_error(
        result,
        "mssql+pymssql://someone:***@127.0.0.1/blog needs the Python module pymssql, which "
        "is not installed; the drivers for database servers are in requirements-servers.txt "
        "(pip install -r requirements-servers.txt)",
    )
    assert "s3cret" not in result.stderr
