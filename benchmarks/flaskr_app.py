"""The Flask tutorial's own blog, flaskr, as the load benchmark's target to beat.

FLASKR_DIR is the examples/tutorial folder of a checkout of pallets/flask,
never copied here. Served by the same granian, with the same settings, as
`python run.py` serves the blog:

    FLASKR_DIR=... FLASKR_DATABASE=flaskr.sqlite \\
        python -m benchmarks.serve benchmarks.flaskr_app:create_app PORT
"""

import contextlib
import importlib
import os
import sqlite3
import sys
from pathlib import Path

from werkzeug.security import generate_password_hash

# The posts flaskr's index shows: it has no paging, so as many as the blog's page.
POSTS = 10


def create_app():
    sys.path.insert(0, os.environ["FLASKR_DIR"])
    flaskr = importlib.import_module("flaskr")  # the checkout's, not installed
    return flaskr.create_app({"DATABASE": os.environ["FLASKR_DATABASE"], "SECRET_KEY": "benchmark"})


def build_database(flaskr_dir: Path, path: Path, username: str, password: str) -> None:
    """flaskr's schema, one user, and POSTS posts like the blog's."""
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.executescript((flaskr_dir / "flaskr" / "schema.sql").read_text())
        connection.execute(
            "INSERT INTO user (username, password) VALUES (?, ?)",
            (username, generate_password_hash(password)),
        )
        connection.executemany(
            "INSERT INTO post (title, body, author_id) VALUES (?, ?, 1)",
            ((f"Post number {n}", f"Body of post {n}. " * 20) for n in range(POSTS)),
        )
