"""Serve the blog, or create its database.

    python run.py                 serve the blog on http://127.0.0.1:5000
    python run.py init            create the database (backing up an existing one)

The database is alembic.ini's sqlalchemy.url, or BLOG_DATABASE_URL when set.
"""

import argparse
import sys

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from blog import create_app
from blog.db import DatabaseProblem, init_db, migration_scripts, schema_problem, sqlite_path


def init(app) -> None:
    backup = init_db(app.extensions["db_engine"], migration_scripts(app))
    if backup:
        print(f"Backed up the old database to {backup}")
    print(f"Created {app.extensions['db_engine'].url} at the latest revision")


def serve(app, host: str, port: int, debug: bool) -> None:
    path = sqlite_path(app.config["DATABASE_URL"])
    if path and not path.exists():
        raise DatabaseProblem(f"{path} does not exist; run `python run.py init`")
    problem = schema_problem(app.extensions["db_engine"], migration_scripts(app))
    if problem:
        raise DatabaseProblem(problem)
    app.run(host=host, port=port, debug=debug)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="run.py",
        usage="python %(prog)s [-h] [--host HOST] [--port PORT] [--debug] [COMMAND]",
        description="Serve the blog (the default), or create its database.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=5000, help="port to serve on (default: %(default)s)")
    parser.add_argument("--debug", action="store_true", help="serve with Flask's debugger and reloader")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    commands.add_parser("init", help="create the database at the latest revision, backing up an existing SQLite file")
    args = parser.parse_args(argv)

    try:
        app = create_app()
        if args.command == "init":
            init(app)
        else:
            serve(app, args.host, args.port, args.debug)
    except DBAPIError as error:
        # The driver's own words and the database, without SQLAlchemy's statement.
        print(f"error: {error.orig} ({app.extensions['db_engine'].url})", file=sys.stderr)
        return 1
    except (DatabaseProblem, SQLAlchemyError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
