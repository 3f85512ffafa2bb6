"""How long the blog's readers and writers wait while a server migrates.

    python -m benchmarks.server_migrations [--posts 1000000] [--project DIR]

On each server that BLOG_TEST_POSTGRES_URL and BLOG_TEST_MYSQL_URL name, makes
a database at revision 1 with that many posts, then runs `alembic upgrade head`
while one thread reads the newest posts and another adds posts, each over and
over on a connection of its own, as the blog's requests do. Prints the
upgrade's wall time and the longest single read and write. Targets on
PostgreSQL at 1,000,000 posts: readers at most 200 ms, writers at most 1 s.
--project runs another checkout's alembic.ini, to compare with it.
"""

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from before_migrations import make_legacy_database
from tests.blogs import add_posts_on_server
from tests.project import CREATE_USERS, PROJECT, SERVER_URL_VARIABLES

TARGETS = {"postgresql": (0.2, 1.0)}  # seconds: the longest read, the longest write


class Client(threading.Thread):
    """Runs one statement over and over, each time in a transaction of its own,
    and notes the longest."""

    def __init__(self, engine, statement: str) -> None:
        super().__init__(daemon=True)
        self.engine, self.statement = engine, text(statement)
        self.longest, self.count, self.stop = 0.0, 0, threading.Event()

    def run(self) -> None:
        with self.engine.connect() as connection:
            while not self.stop.is_set():
                started = time.perf_counter()
                connection.execute(self.statement)
                connection.commit()
                self.longest = max(self.longest, time.perf_counter() - started)
                self.count += 1
                time.sleep(0.005)


def measure(server_url: str, posts: int, project: Path) -> dict:
    server = create_engine(server_url, isolation_level="AUTOCOMMIT")
    name = f"blog_bench_{uuid.uuid4().hex[:8]}"
    with server.connect() as connection:
        connection.exec_driver_sql(
            f"CREATE DATABASE {name}"
            + (" CHARACTER SET utf8mb4" if server.dialect.name == "mysql" else "")
        )
    url = server.url.set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url, pool_size=4)
    environment = os.environ | {"BLOG_DATABASE_URL": url}
    alembic = [sys.executable, "-m", "alembic", "-c", str(project / "alembic.ini")]
    try:
        make_legacy_database(engine, [])
        add_posts_on_server(engine, posts)
        subprocess.run(
            [*alembic, "upgrade", CREATE_USERS], env=environment, check=True, capture_output=True
        )
        clients = [
            Client(engine, "SELECT id, title FROM post ORDER BY id DESC LIMIT 3"),
            Client(
                engine,
                "INSERT INTO post (title, body, created)"
                " VALUES ('New', 'A body.', CURRENT_TIMESTAMP)",
            ),
        ]
        for client in clients:
            client.start()
        time.sleep(1)  # the clients' own pace, before the migration
        started = time.perf_counter()
        upgrade = subprocess.run(
            [*alembic, "upgrade", "head"], env=environment, capture_output=True, text=True
        )
        seconds = time.perf_counter() - started
        time.sleep(0.5)
        for client in clients:
            client.stop.set()
            client.join()
        if upgrade.returncode:
            sys.exit(f"alembic upgrade head failed: {upgrade.stderr}")
        reader, writer = clients
        return {
            "upgrade": seconds,
            "read": reader.longest,
            "write": writer.longest,
            "reads": reader.count,
            "writes": writer.count,
        }
    finally:
        engine.dispose()
        with server.connect() as connection:
            connection.exec_driver_sql(
                f"DROP DATABASE {name}"
                + (" WITH (FORCE)" if server.dialect.name == "postgresql" else "")
            )
        server.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--project", type=Path, default=PROJECT)
    options = parser.parse_args()
    servers = {
        backend: os.environ[variable]
        for backend, variable in SERVER_URL_VARIABLES.items()
        if os.environ.get(variable)
    }
    if not servers:
        sys.exit("set BLOG_TEST_POSTGRES_URL or BLOG_TEST_MYSQL_URL (README, Tests and benchmarks)")
    print(
        f"alembic upgrade head from revision 1 at {options.posts:,} posts,"
        " under a reader and a writer"
    )
    print(
        f"{'server':<12}{'upgrade':>10}{'longest read':>15}{'longest write':>15}"
        "  target (read, write)"
    )
    for backend, url in servers.items():
        result = measure(url, options.posts, options.project.resolve())
        target = TARGETS.get(backend)
        print(
            f"{backend:<12}{result['upgrade']:>9.1f}s{result['read'] * 1000:>12.0f} ms"
            f"{result['write'] * 1000:>12.0f} ms  "
            + (f"{target[0] * 1000:.0f} ms, {target[1] * 1000:.0f} ms" if target else "-")
            + f"   ({result['reads']:,} reads, {result['writes']:,} writes)"
        )


if __name__ == "__main__":
    main()
