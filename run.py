"""Serve the blog, create its database, or copy it to another database.

    python run.py                 serve the blog on http://127.0.0.1:5000
    python run.py init            create the database (backing up an existing one)
    python run.py restore FILE    put a backup back (backing up the database first)
    python run.py copy FROM TO    copy users and posts between two database URLs

The database is alembic.ini's sqlalchemy.url, or BLOG_DATABASE_URL when set.
"""

import argparse
import sys
from pathlib import Path

from sqlalchemy import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from blog import create_app
from blog.db import DatabaseProblem, create_db_engine
from blog.maintenance import (
    check_database,
    copy_database,
    init_db,
    migration_scripts,
    restore_db,
)


def init(app) -> None:
    backup = init_db(app.extensions["db_engine"], migration_scripts(app))
    if backup:
        print(f"Backed up the old database to {backup}")
    print(f"Created {app.extensions['db_engine'].url} at the latest revision")


def restore(app, backup_file: str) -> None:
    engine = app.extensions["db_engine"]
    backup = restore_db(engine, Path(backup_file))
    if backup:
        print(f"Backed up the current database to {backup}")
    print(f"Restored {Path(backup_file).resolve()} into {engine.url}")


def serve(app, host: str, port: int, debug: bool) -> None:
    check_database(app.extensions["db_engine"], migration_scripts(app))
    app.run(host=host, port=port, debug=debug)


def copy(app, source_url: str, target_url: str) -> None:
    source, target = create_db_engine(source_url), create_db_engine(target_url)
    copy_database(source, target, migration_scripts(app),
                  progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"Copied every user and post from {source.url} to {target.url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="run.py",
        usage="python %(prog)s [-h] [--host HOST] [--port PORT] [--debug] [COMMAND]",
        description="Serve the blog (the default), or create or copy its database.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=5000, help="port to serve on (default: %(default)s)")
    parser.add_argument("--debug", action="store_true", help="serve with Flask's debugger and reloader")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    commands.add_parser("init", help="create the database at the latest revision, backing up an existing SQLite file")
    restore_parser = commands.add_parser(
        "restore", help="replace the SQLite database with a backup, backing it up first")
    restore_parser.add_argument("backup", metavar="FILE", help="the backup to put back")
    copy_parser = commands.add_parser(
        "copy", help="copy every user and post, keeping ids, into a database with none")
    copy_parser.add_argument("source", metavar="FROM", help="database URL to copy from")
    copy_parser.add_argument("target", metavar="TO", help="database URL to copy into")
    args = parser.parse_args(argv)

    try:
        app = create_app()
        if args.command == "init":
            init(app)
        elif args.command == "restore":
            restore(app, args.backup)
        elif args.command == "copy":
            copy(app, args.source, args.target)
        else:
            serve(app, args.host, args.port, args.debug)
    except DBAPIError as error:
        # The driver's own words and the database (its password hidden),
        # without SQLAlchemy's statement and parameters.
        if args.command == "copy":
            where = f"{make_url(args.source)} -> {make_url(args.target)}"
        else:
            where = app.extensions["db_engine"].url
        print(f"error: {str(error.orig).strip()} ({where})", file=sys.stderr)
        return 1
    except ImportError as error:
        print(f"error: {error}; the drivers for database servers are in "
              "requirements-servers.txt", file=sys.stderr)
        return 1
    except (DatabaseProblem, SQLAlchemyError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
