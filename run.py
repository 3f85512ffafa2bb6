"""Serve the blog, create its database, check it, or copy it to another database.

    python run.py                 serve the blog on http://127.0.0.1:5000 (granian)
    python run.py --debug         serve it with Flask's debugger and reloader instead
    python run.py init            create the database (backing up an existing one)
    python run.py restore FILE    put a backup back (backing up the database first)
    python run.py copy FROM TO    copy users and posts between two database URLs,
                                  checked first and verified after (--dry-run: check)
    python run.py check           compare the database's tables with the models

The database is alembic.ini's sqlalchemy.url, or BLOG_DATABASE_URL when set.
"""

import argparse
import functools
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from werkzeug.serving import WSGIRequestHandler

from blog import SettingProblem, create_app
from blog.copying import copy_database
from blog.maintenance import (
    check_database,
    init_db,
    integrity_problems,
    migration_scripts,
    refuse_a_damaged_database,
    restore_db,
    schema_differences,
)
from database_safety import (
    DatabaseProblem,
    command_lock_wait,
    create_engine,
    create_reading_engine,
    fold_the_wal,
    shown,
)


def init(app) -> None:
    backup = init_db(app.extensions["db_engine"], migration_scripts(app))
    if backup:
        print(f"Backed up the old database to {backup}")
    print(f"Created {shown(app.extensions['db_engine'].url)} at the latest revision")


def restore(app, backup_file: str) -> None:
    # An engine of its own: the app's refuses to open blog.db once a damaged
    # one has been moved aside, as a running blog must.
    engine = create_engine(app.config["DATABASE_URL"], command_lock_wait())
    restored = restore_db(engine, Path(backup_file), migration_scripts(app))
    if restored.damaged:
        print(f"Moved the damaged database aside to {restored.kept}")
    elif restored.kept:
        print(f"Backed up the current database to {restored.kept}")
    print(f"Restored {Path(backup_file).resolve()} into {shown(engine.url)}")
    engine.dispose()


# granian as `python run.py` starts it: a worker process per CPU, each with
# threads for the requests that wait (a login's password hash, a database lock).
DEFAULT_WORKERS = os.cpu_count() or 1
DEFAULT_THREADS = 4


def serve_wsgi(
    factory: str,
    host: str,
    port: int,
    workers: int,
    threads: int,
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Serve, with granian, the WSGI app that factory ("module:function", from
    this folder) makes in each worker process, on threads threads (see
    blog/serving.py); call on_stop once every worker has stopped."""
    # Imported here: only serving needs it, and every other command starts faster.
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings

    # What each worker, which granian starts anew, serves.
    os.environ.update(BLOG_SERVED_APP=factory, BLOG_THREADS=str(threads))
    server = Granian(
        "blog.serving:served_app",
        factory=True,
        # granian's own interface: a request's body is read before a thread runs the app.
        interface=Interfaces.RSGI,
        websockets=False,  # the blog has none
        # HTTP/1.1 only: cleartext HTTP/2 streams with unfinished bodies held
        # worker threads spinning for good.
        http=HTTPModes.http1,
        address=host,
        port=port,
        workers=workers,
        # A connection per request: each goes back to the queue every worker
        # takes from, as the load benchmark measures it.
        http1_settings=HTTP1Settings(keep_alive=False),
        working_dir=Path(__file__).resolve().parent,
        # A worker that misses the signal to stop (one starting as it came) is
        # killed after this long, rather than keeping the server up forever.
        workers_kill_timeout=10,
        # One worker that dies (killed, out of memory) is replaced, rather
        # than taking the whole server down with it.
        respawn_failed_workers=True,
    )
    if on_stop:
        server.on_shutdown(on_stop)
    server.serve()


def serving_app():
    # serve() checked the database, once: a worker that failed the check would die.
    return create_app({"CHECK_DATABASE": False})


class VersionlessRequestHandler(WSGIRequestHandler):
    """Flask's development server, without its and Python's versions in each response."""

    def version_string(self) -> str:
        return "Werkzeug"


class PortProblem(Exception):
    """The address to serve on cannot be had; the message says what to do."""


def refuse_a_busy_port(host: str, port: int) -> None:
    # One line naming --port, before any worker starts.
    family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            probe.bind(address)
        except OSError as error:
            raise PortProblem(
                f"cannot serve on {host}:{port}: {error.strerror}; "
                "choose another port with --port (make run PORT=...)"
            ) from None


def serve(app, host: str, port: int, debug: bool, workers: int, threads: int) -> None:
    refuse_a_damaged_database(app.extensions["db_engine"])
    check_database(app.extensions["db_read_engine"], migration_scripts(app))
    if debug:
        app.run(host=host, port=port, debug=True, request_handler=VersionlessRequestHandler)
        return
    refuse_a_busy_port(host, port)
    # The workers fork from this process: none may inherit its connections.
    app.extensions["db_engine"].dispose()
    # A worker's connections are never closed (its process ends without
    # Python's exit handlers): the blog.db it leaves is whole only once this
    # process folds blog.db-wal in.
    stopped = functools.partial(fold_the_wal, app.config["DATABASE_URL"])
    serve_wsgi("run:serving_app", host, port, workers, threads, on_stop=stopped)


def check(app) -> int:
    engine = app.extensions["db_engine"]
    differences = schema_differences(app.extensions["db_read_engine"])
    problems = integrity_problems(app.extensions["db_read_engine"])
    for line in differences + problems:
        print(line)
    if differences:
        print(
            f"{shown(engine.url)} differs from the models in {ways(len(differences))}",
            file=sys.stderr,
        )
    if problems:
        print(
            f"{shown(engine.url)} failed SQLite's integrity checks in {ways(len(problems))}; "
            "`python run.py restore` a good backup",
            file=sys.stderr,
        )
    if differences or problems:
        return 1
    whole = ", and SQLite's quick_check and foreign_key_check find it whole"
    print(
        f"{shown(engine.url)} matches the models"
        + (whole if engine.dialect.name == "sqlite" else "")
    )
    return 0


def ways(count: int) -> str:
    return f"{count} way" + ("" if count == 1 else "s")


def copy(app, source_url: str, target_url: str, dry_run: bool) -> None:
    source = create_reading_engine(source_url)
    target = create_engine(target_url, command_lock_wait())
    copied = copy_database(
        source,
        target,
        migration_scripts(app),
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        dry_run=dry_run,
    )
    print(
        copied or f"Every user and post of {shown(source.url)} can be copied to {shown(target.url)}"
    )


def at_least_one(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"must be a whole number, at least 1, not {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="run.py",
        usage="python %(prog)s [-h] [--host HOST] [--port PORT] [--workers N] [--threads N] "
        "[--debug] [COMMAND]",
        description="Serve the blog (the default), or create or copy its database.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to serve on (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=5000, help="port to serve on (default: %(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=at_least_one,
        default=DEFAULT_WORKERS,
        help="processes serving requests (default: one per CPU, %(default)s here)",
    )
    parser.add_argument(
        "--threads",
        type=at_least_one,
        default=DEFAULT_THREADS,
        help="threads in each process (default: %(default)s)",
    )
    parser.add_argument(
        "--debug", action="store_true", help="serve with Flask's debugger and reloader, one process"
    )
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    commands.add_parser(
        "init",
        help="create the database at the latest revision, backing up an existing SQLite file",
    )
    restore_parser = commands.add_parser(
        "restore", help="replace the SQLite database with a backup, backing it up first"
    )
    restore_parser.add_argument("backup", metavar="FILE", help="the backup to put back")
    copy_parser = commands.add_parser(
        "copy", help="copy every user and post, keeping ids, into a database with none"
    )
    copy_parser.add_argument("source", metavar="FROM", help="database URL to copy from")
    copy_parser.add_argument("target", metavar="TO", help="database URL to copy into")
    copy_parser.add_argument(
        "--dry-run",
        action="store_true",
        help="only check that every value can be stored in TO; write nothing",
    )
    commands.add_parser(
        "check", help="compare the database's tables with the models; exit 1 naming each difference"
    )
    args = parser.parse_args(argv)
    if args.command:
        # What the database side says as it goes ("waiting for the write lock ..."), as lines.
        logging.basicConfig(format="%(message)s")

    try:
        # The commands create, replace or copy the database: serve() checks it.
        app = create_app({"CHECK_DATABASE": False, "LOCK_WAIT_SECONDS": command_lock_wait()})
        if args.command == "init":
            init(app)
        elif args.command == "restore":
            restore(app, args.backup)
        elif args.command == "copy":
            copy(app, args.source, args.target, args.dry_run)
        elif args.command == "check":
            return check(app)
        else:
            serve(app, args.host, args.port, args.debug, args.workers, args.threads)
    except DBAPIError as error:
        # The driver's own words and the database (its password hidden),
        # without SQLAlchemy's statement and parameters.
        if args.command == "copy":
            where = f"{shown(args.source)} -> {shown(args.target)}"
        else:
            where = shown(app.extensions["db_engine"].url)
        print(f"error: {str(error.orig).strip()} ({where})", file=sys.stderr)
        return 1
    except (DatabaseProblem, SettingProblem, PortProblem, SQLAlchemyError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
