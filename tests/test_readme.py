"""The README's server transcripts, typed as a reader types them, on real servers:
every command as written (in a database of the test's own) prints what the
README shows."""

import os
import re
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import create_engine

from before_migrations import LESSON_POSTS, make_legacy_database

from .project import PROJECT, SERVER_URL_VARIABLES, alembic
from .server import serving
from .webclient import Browser

Step = tuple[str, list[str]]  # a command, and the lines it prints


def console_blocks(markdown: str) -> list[list[Step]]:
    blocks = []
    for block in re.findall(r"^```console\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL):
        steps: list[Step] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
        blocks.append(steps)
    return blocks


def server_transcript() -> tuple[list[Step], list[str]]:
    """The steps from the copy to a server through the refused downgrade, and
    the lines the README gives MariaDB in place of PostgreSQL's."""
    blocks = console_blocks((PROJECT / "README.md").read_text())
    first = next(
        i for i, steps in enumerate(blocks) if any("run.py copy" in line for line, _ in steps)
    )
    last = next(i for i in range(first, len(blocks)) if "mariadb-dump" in blocks[i][-1][0])
    steps = [step for block in blocks[first:last] for step in block]
    return steps, [command for command, _ in blocks[last]]


POSTGRESQL_URL = "postgresql+psycopg://postgres@127.0.0.1/blog"
# Alembic's first two lines, as the README says they read on each server.
ALEMBIC_LINES = (
    "INFO  [alembic.runtime.migration] Context impl {}\n"
    "INFO  [alembic.runtime.migration] Will assume {}"
)
POSTGRESQL_LINES = ALEMBIC_LINES.format("PostgresqlImpl.", "transactional DDL.")
MARIADB_LINES = ALEMBIC_LINES.format("MySQLImpl.", "non-transactional DDL.")


def for_mariadb(steps: list[Step], mariadb_lines: list[str]) -> list[Step]:
    """The steps as the README says to change them for MariaDB."""
    creates, exports, dumps = mariadb_lines
    url = exports.partition("=")[2]
    in_place = {"createdb": creates, "export": exports, "pg_dump": dumps}
    changed = []
    for command, output in steps:
        command = in_place.get(command.split()[0], command).replace(POSTGRESQL_URL, url)
        text = "\n".join(output).replace(POSTGRESQL_URL, url)
        changed.append((command, text.replace(POSTGRESQL_LINES, MARIADB_LINES).splitlines()))
    return changed


@pytest.mark.only_on("postgresql", "mysql")
def test_the_server_section_replays_as_written(backend, project, runner, tmp_path):
    steps, mariadb_lines = server_transcript()
    if backend == "mysql":
        steps = for_mariadb(steps, mariadb_lines)
    # The lesson's blog.db at the latest revision, as the reader has it by now.
    lesson = create_engine(f"sqlite:///{project / 'blog.db'}")
    make_legacy_database(lesson, LESSON_POSTS)
    lesson.dispose()
    assert alembic(runner, project, "upgrade", "head").returncode == 0

    # The README's database, "blog", under a name of the test's own.
    name = f"blog_test_{uuid.uuid4().hex[:12]}"
    renamed = re.compile(r"\bblog\b(?![.\w/-])")
    environment = {key: value for key, value in os.environ.items() if key != "BLOG_DATABASE_URL"}
    environment["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{environment['PATH']}"
    try:
        for command, expected in steps:
            command = renamed.sub(name, command)
            if command.startswith("export "):
                key, _, value = command.removeprefix("export ").partition("=")
                environment[key] = value
            elif command.startswith("unset "):
                environment.pop(command.split()[1], None)
            elif command == "python run.py":
                # "Register on the served blog, write a post, and stop it."
                write_a_post(project, environment, tmp_path)
            else:
                result = subprocess.run(
                    command,
                    shell=True,
                    cwd=project,
                    env=environment,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    timeout=120,
                )
                assert result.stdout.splitlines() == [renamed.sub(name, line) for line in expected]
                failed = any(line.startswith("FAILED:") for line in expected)
                assert (result.returncode != 0) == failed, command
    finally:
        server = create_engine(
            os.environ[SERVER_URL_VARIABLES[backend]], isolation_level="AUTOCOMMIT"
        )
        with server.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        server.dispose()


def write_a_post(project, environment, tmp_path):
    command = [sys.executable, project / "run.py", "--port"]
    with serving(command, tmp_path / "server.log", environment, cwd=project) as base_url:
        writer = Browser(base_url)
        writer.sign_up("alice")
        status, _, _ = writer.request("/create", {"title": "On a server", "body": "Hello."})
        assert status == 302
