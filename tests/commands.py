"""Commands as a user types them (`python run.py init`, `python -m alembic
upgrade head`), each in a process of its own, without the second of imports.

Most of the 1.3 s `python run.py check` takes is importing SQLAlchemy, Alembic
and Flask. So each command is forked from a process that has imported them
already (multiprocessing's fork server), and then gets what `python` would
give it: its own folder, environment, umask, sys.path and sys.argv, its
output in files of its own, and its exit status.
"""

import atexit
import json
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

# What `python run.py` and `alembic` import before they do anything.
LIBRARIES = [
    "argparse",
    "logging.config",
    "sqlite3",
    "sqlalchemy",
    "sqlalchemy.orm",
    "sqlalchemy.dialects.mysql",
    "sqlalchemy.dialects.postgresql",
    "sqlalchemy.dialects.sqlite",
    "alembic.autogenerate",
    "alembic.command",
    "alembic.config",
    "alembic.ddl",
    "mako.template",
    "flask",
    "werkzeug.serving",
    "zxcvbn",
    "psycopg",
    "pymysql",
]

forkserver = multiprocessing.get_context("forkserver")
forkserver.set_forkserver_preload(LIBRARIES)


@cache
def python_path() -> list[str]:
    """sys.path as a new `python` has it, but for its first entry (the script's folder)."""
    shown = subprocess.run(
        [sys.executable, "-c", "import json, sys; print(json.dumps(sys.path[1:]))"],
        capture_output=True,
        check=True,
        text=True,
    )
    return json.loads(shown.stdout)


def run(args, cwd, env, timeout) -> subprocess.CompletedProcess:
    """`python ARGS` in cwd with exactly the environment env, as subprocess.run
    with capture_output=True and text=True would run it."""
    with tempfile.TemporaryDirectory() as output:
        stdout, stderr = Path(output, "stdout"), Path(output, "stderr")
        command = start(args, cwd, env, stdout, stderr)
        try:
            status = command.wait(timeout)
        except subprocess.TimeoutExpired:
            command.kill()
            command.wait()
            raise
        return subprocess.CompletedProcess(
            command.args, status, stdout.read_text(), stderr.read_text()
        )


def start(args, cwd, env, stdout, stderr, new_session=False) -> "Started":
    """`python ARGS` started in cwd with exactly the environment env, writing
    to the files stdout and stderr (which may be the same file)."""
    args = [str(arg) for arg in args]
    umask = os.umask(0)
    os.umask(umask)
    process = forkserver.Process(
        target=python,
        args=(args, str(cwd), env, umask, str(stdout), str(stderr), python_path(), new_session),
    )
    process.start()
    return Started([sys.executable, *args], process)


class Started:
    """What the tests use of subprocess.Popen, for a command start() started."""

    def __init__(self, args: list[str], process) -> None:
        self.args, self.process, self.pid = args, process, process.pid

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.process.exitcode

    def kill(self) -> None:
        self.process.kill()


def python(args, cwd, env, umask, stdout, stderr, path, new_session) -> None:
    """In the forked process: what `python ARGS` does once it has started."""
    if new_session:
        os.setsid()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    os.umask(umask)
    for fd, name in ((1, stdout), (2, stderr)):
        if fd == 2 and name == stdout:
            os.dup2(1, 2)
            continue
        file = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(file, fd)
        os.close(file)
    sys.orig_argv = [sys.executable, *args]  # what a reloader runs again
    multiprocessing.set_start_method(None, force=True)  # the server's workers: fork, not this
    status = 0
    try:
        if args[0] == "-m":
            sys.argv, sys.path[:] = ["-m", *args[2:]], [cwd, *path]
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv, sys.path[:] = args, [os.path.dirname(os.path.abspath(args[0])), *path]
            runpy.run_path(args[0], run_name="__main__")
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            status = exit.code or 0
        else:
            print(exit.code, file=sys.stderr)
            status = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        status = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
