"""Migration cost and page latency, from a thousand to a million posts.

    python -m benchmarks.migrations [--sizes 1000,100000,1000000] [--repeat 5] [--json FILE]

Builds pre-migration blog.db files of each size, then measures, several times
each, and prints the medians (and writes them as JSON):

- `alembic upgrade head` run in-process against the raw-SQL floor: the very
  statements Alembic emits (its --sql output) run with sqlite3 in one
  transaction, timed in the same run. Likewise `alembic downgrade` from head
  to revision 1 (revision 2's DROP INDEX and DROP COLUMN, after revision 3
  drops its tables, empty here), on the migrated database
  and on one that `run.py init` made with the same posts; the backup that
  every SQLite downgrade takes first is timed on its own.
- the whole `alembic upgrade head` command: wall time and peak memory (RSS).
- page latency through the real app (Flask's test client).
"""

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from before_migrations import make_legacy_database
from blog import create_app
from blog.maintenance import init_db, migration_scripts
from database_safety import back_up
from tests.project import PROJECT, REVISIONS

TARGETS = {
    "upgrade / floor at the largest size": 1.2,
    "downgrade to 1 without its backup / floor at the largest size": 1.2,
    "the same, on a database made by run.py init": 1.2,
    "upgrade peak memory, largest / smallest": 1.2,
    "page latency, largest / index at smallest": 1.5,
}
PAGE_REQUESTS = 200


def build_legacy(path: Path, posts: int) -> None:
    """A blog.db as the blog made it before migrations, its posts in one transaction."""
    engine = create_engine(f"sqlite:///{path}")
    make_legacy_database(engine, [])
    engine.dispose()
    # sqlite3 takes the rows from a generator: a million never sit in memory at once.
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.executemany(
            "INSERT INTO post (title, body, created) VALUES (?, ?, ?)",
            (
                (f"Post number {n}", f"Body of post {n}. " * 10, "2024-01-01 12:00:00.000000")
                for n in range(posts)
            ),
        )


def alembic_config(path: Path) -> Config:
    os.environ["BLOG_DATABASE_URL"] = f"sqlite:///{path}"
    return Config(PROJECT / "alembic.ini", output_buffer=io.StringIO())


def quietly(function, *args, **kwargs):
    # env.py sets up Alembic's INFO logging on stderr at every run.
    with contextlib.redirect_stderr(io.StringIO()):
        return function(*args, **kwargs)


def offline_sql(path: Path, step, revision: str) -> str:
    """What `alembic upgrade/downgrade REVISION --sql` prints."""
    config = alembic_config(path)
    quietly(step, config, revision, sql=True)
    assert isinstance(config.output_buffer, io.StringIO)
    return config.output_buffer.getvalue()


def seconds(function, *args, **kwargs) -> float:
    start = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - start


def run_script(path: Path, sql: str) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.executescript(sql)  # the script brings its own BEGIN and COMMIT


def made_by_init(legacy: Path, path: Path) -> None:
    """A database that `run.py init` made, holding the legacy file's posts."""
    app = create_app(
        {"DATABASE_URL": f"sqlite:///{path}", "SECRET_KEY": "benchmark", "CHECK_DATABASE": False}
    )
    init_db(app.extensions["db_engine"], migration_scripts(app))
    app.extensions["db_engine"].dispose()
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("ATTACH DATABASE ? AS legacy", (str(legacy),))
        connection.execute(
            "INSERT INTO post (id, title, body, created) "
            "SELECT id, title, body, created FROM legacy.post"
        )


def backup_seconds(path: Path) -> float:
    start = time.perf_counter()
    backup = back_up(path)
    elapsed = time.perf_counter() - start
    backup.unlink()
    return elapsed


def migration_costs(legacy: Path, work: Path, repeat: int) -> dict:
    """Medians of the upgrade and the downgrade, in-process and at the floor."""
    upgraded, initialised = work / "upgraded.db", work / "initialised.db"
    shutil.copy(legacy, upgraded)
    upgrade_sql = offline_sql(legacy, command.upgrade, "head")
    quietly(command.upgrade, alembic_config(upgraded), "head")
    made_by_init(legacy, initialised)
    first = REVISIONS[0].revision
    downgrade_sql = offline_sql(upgraded, command.downgrade, f"head:{first}")

    def downgrade():
        quietly(command.downgrade, alembic_config(scratch), first)
        for backup in work.glob("scratch.db.bak*"):
            backup.unlink()

    times: dict[str, list[float]] = {
        "upgrade": [],
        "upgrade floor": [],
        "downgrade to 1": [],
        "downgrade to 1 floor": [],
        "downgrade to 1, init-made": [],
        "downgrade to 1 floor, init-made": [],
        "backup": [],
    }
    scratch = work / "scratch.db"
    for _ in range(repeat):
        for name, source, run in (
            ("upgrade", legacy, lambda: quietly(command.upgrade, alembic_config(scratch), "head")),
            ("upgrade floor", legacy, lambda: run_script(scratch, upgrade_sql)),
            ("downgrade to 1", upgraded, downgrade),
            ("downgrade to 1 floor", upgraded, lambda: run_script(scratch, downgrade_sql)),
            ("downgrade to 1, init-made", initialised, downgrade),
            # init writes every row's author_id, even NULL, and DROP COLUMN
            # rewrites each row that holds it: a floor of its own.
            (
                "downgrade to 1 floor, init-made",
                initialised,
                lambda: run_script(scratch, downgrade_sql),
            ),
            ("backup", upgraded, lambda: backup_seconds(scratch)),
        ):
            shutil.copy(source, scratch)
            times[name].append(seconds(run))
    initialised.unlink()
    return {name: statistics.median(values) for name, values in times.items()}


def upgrade_command(legacy: Path, work: Path, repeat: int) -> dict:
    """The whole `alembic upgrade head` command: wall time and peak RSS."""
    scratch = work / "scratch.db"
    walls, peaks = [], []
    env = {**os.environ, "BLOG_DATABASE_URL": f"sqlite:///{scratch}"}
    for _ in range(repeat):
        shutil.copy(legacy, scratch)
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "alembic", "-c", PROJECT / "alembic.ini", "upgrade", "head"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(process.pid, 0)
        walls.append(time.perf_counter() - start)
        assert os.waitstatus_to_exitcode(status) == 0, "alembic upgrade head failed"
        peaks.append(usage.ru_maxrss / 1024)  # KiB on Linux
    return {"command wall": statistics.median(walls), "peak MiB": statistics.median(peaks)}


def give_posts_authors(path: Path) -> None:
    """Nine writers share the posts; every tenth post has no author."""
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.executemany(
            "INSERT INTO user (id, username, password_hash, created) VALUES (?, ?, 'x', "
            "'2024-01-01 00:00:00')",
            [(n, f"writer{n}") for n in range(1, 10)],
        )
        connection.execute("UPDATE post SET author_id = NULLIF(id % 10, 0)")


def pages_to_time(app, path: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        oldest = connection.execute("SELECT min(id) FROM post").fetchone()[0]
        oldest_by_writer1 = connection.execute(
            "SELECT id FROM post WHERE author_id = 1 ORDER BY id LIMIT 1 OFFSET 10"
        ).fetchone()[0]
    per_page = app.config["POSTS_PER_PAGE"]
    return {
        "index": "/",
        "index, oldest page": f"/?before={oldest + per_page}",
        "user page": "/users/writer1",
        "user page, oldest": f"/users/writer1?before={oldest_by_writer1}",
    }


def page_latencies(databases: dict[int, Path]) -> dict[int, dict[str, float]]:
    """Median milliseconds per page and size, through the app.

    Every page of every size is requested once a round, so that whatever the
    machine does meanwhile weighs on all of them alike.
    """
    clients = {}
    for posts, path in databases.items():
        app = create_app({"DATABASE_URL": f"sqlite:///{path}", "SECRET_KEY": "benchmark"})
        clients[posts] = (app.test_client(), pages_to_time(app, path))
    times: dict[int, dict[str, list[float]]] = {
        posts: {name: [] for name in pages} for posts, (_, pages) in clients.items()
    }
    for round_ in range(PAGE_REQUESTS + 20):
        for posts, (client, pages) in clients.items():
            for name, url in pages.items():
                start = time.perf_counter()
                response = client.get(url)
                elapsed = time.perf_counter() - start
                assert response.status_code == 200 and "<h2>" in response.get_data(as_text=True)
                if round_ >= 20:  # after warming up
                    times[posts][name].append(elapsed * 1000)
    return {
        posts: {f"{name} ms": statistics.median(values) for name, values in pages.items()}
        for posts, pages in times.items()
    }


def measure_migrations(posts: int, repeat: int, work: Path) -> tuple[dict, Path]:
    """The migration figures, and a database at head with authors for the pages."""
    legacy = work / "legacy.db"
    build_seconds = seconds(build_legacy, legacy, posts)
    result = {
        "posts": posts,
        "build legacy s": build_seconds,
        "database MiB": legacy.stat().st_size / 2**20,
    }
    result.update(migration_costs(legacy, work, repeat))
    result.update(upgrade_command(legacy, work, repeat))
    pages = work / f"pages-{posts}.db"
    (work / "upgraded.db").rename(pages)
    give_posts_authors(pages)
    for path in (legacy, work / "scratch.db"):
        path.unlink()
    return result, pages


def print_table(results: list[dict]) -> None:
    rows = [
        ("posts", "{:,}"),
        ("database MiB", "{:.1f}"),
        ("build legacy s", "{:.2f}"),
        ("upgrade", "{:.3f} s"),
        ("upgrade floor", "{:.3f} s"),
        ("downgrade to 1", "{:.3f} s"),
        ("downgrade to 1 floor", "{:.3f} s"),
        ("downgrade to 1, init-made", "{:.3f} s"),
        ("downgrade to 1 floor, init-made", "{:.3f} s"),
        ("backup", "{:.3f} s"),
        ("command wall", "{:.3f} s"),
        ("peak MiB", "{:.1f}"),
        ("index ms", "{:.2f}"),
        ("index, oldest page ms", "{:.2f}"),
        ("user page ms", "{:.2f}"),
        ("user page, oldest ms", "{:.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, form in rows:
        cells = [form.format(result[name]) for result in results]
        print(f"{name:<{width}}  " + "  ".join(f"{cell:>14}" for cell in cells))


def ratios(results: list[dict]) -> dict:
    smallest, largest = results[0], results[-1]
    worst_page = max(
        largest[name]
        for name in ("index ms", "index, oldest page ms", "user page ms", "user page, oldest ms")
    )
    return {
        "upgrade / floor at the largest size": largest["upgrade"] / largest["upgrade floor"],
        # The downgrade's own work: what it took, less the backup it took first.
        "downgrade to 1 without its backup / floor at the largest size": (
            largest["downgrade to 1"] - largest["backup"]
        )
        / largest["downgrade to 1 floor"],
        "the same, on a database made by run.py init": (
            largest["downgrade to 1, init-made"] - largest["backup"]
        )
        / largest["downgrade to 1 floor, init-made"],
        "upgrade peak memory, largest / smallest": largest["peak MiB"] / smallest["peak MiB"],
        "page latency, largest / index at smallest": worst_page / smallest["index ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.migrations",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        default="1000,100000,1000000",
        help="numbers of posts, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="runs of each migration measurement (default: %(default)s)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results.json"),
        help="where to write the figures (default: %(default)s)",
    )
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))

    results, databases = [], {}
    with tempfile.TemporaryDirectory() as work:
        for posts in sizes:
            print(f"migrating {posts:,} posts...", file=sys.stderr, flush=True)
            result, databases[posts] = measure_migrations(posts, args.repeat, Path(work))
            results.append(result)
        print("timing pages...", file=sys.stderr, flush=True)
        for result, latencies in zip(results, page_latencies(databases).values(), strict=True):
            result.update(latencies)
    machine = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )
    print(f"\nMedians of {args.repeat} runs ({PAGE_REQUESTS} requests a page); {machine}\n")
    print_table(results)
    print()
    found = ratios(results)
    for name, value in found.items():
        verdict = "meets" if value <= TARGETS[name] else "MISSES"
        print(f"{name:<60} {value:5.2f}  ({verdict} the target of {TARGETS[name]})")
    args.json.write_text(
        json.dumps(
            {"machine": machine, "repeat": args.repeat, "results": results, "ratios": found},
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
