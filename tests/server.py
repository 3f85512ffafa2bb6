"""A server as the tests and benchmarks start one: on a free port, stopped whole afterwards."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from . import commands


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_page(url: str, seconds: float = 20) -> str:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def serving(command: list, log: Path, env: dict | None = None, cwd=None, forked: bool = True):
    """Run command with the port it should listen on last; its base URL once it
    answers. A `python` command is forked like the tests' others (tests.commands)
    unless forked is False. Stopped afterwards with SIGTERM to its whole process group."""
    with server_process(command, log, env, cwd, forked) as (base_url, _):
        yield base_url


@contextlib.contextmanager
def server_process(
    command: list,
    log: Path,
    env: dict | None = None,
    cwd=None,
    forked: bool = True,
    stop: Callable[[int], None] = lambda pid: os.killpg(pid, signal.SIGTERM),
) -> Iterator[tuple[str, int]]:
    """As serving(), but the base URL and the server's process id, and stopped
    afterwards by stop(pid)."""
    port = free_port()
    command = [*map(str, command), str(port)]
    environ = {**os.environ, **(env or {})}
    # A session of its own: --debug's reloader serves from a child process.
    server: commands.Started | subprocess.Popen
    if forked and command[0] == sys.executable:
        server = commands.start(command[1:], cwd or os.getcwd(), environ, log, log, True)
    else:
        with open(log, "w") as output:
            server = subprocess.Popen(
                command,
                cwd=cwd,
                env=environ,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_for_page(base_url + "/")
        yield base_url, server.pid
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have stopped by itself
            stop(server.pid)
        # The server lets its workers finish what they are answering first.
        server.wait(40)
