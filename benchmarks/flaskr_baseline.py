"""The load benchmark's baseline: the blog's index page as flaskr would serve it.

One Flask view on raw sqlite3, a connection per request in a deferred
transaction, rendering the blog's own templates, so that both answer with
the same bytes. Served by the same granian, with the same settings, as
`python run.py` serves the blog:

    BASELINE_DATABASE=blog.db python -m benchmarks.serve benchmarks.flaskr_baseline:create_app PORT
"""

import os
import sqlite3
from datetime import datetime
from types import SimpleNamespace

from flask import Flask, g, render_template

import blog

QUERY = """
    SELECT p.id, p.title, p.body, p.created, u.username
    FROM post p LEFT JOIN user u ON u.id = p.author_id
    ORDER BY p.id DESC LIMIT ?
"""


def get_db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = sqlite3.connect(os.environ["BASELINE_DATABASE"])
    return g.db


def close_db(exception=None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


def index():
    g.user = None
    per_page = 10
    rows = get_db().execute(QUERY, (per_page + 1,)).fetchall()
    posts = [
        SimpleNamespace(
            id=id,
            title=title,
            body=body,
            created=datetime.fromisoformat(created),
            author=username and SimpleNamespace(username=username),
        )
        for id, title, body, created, username in rows
    ]
    older = {"before": posts[per_page - 1].id} if len(posts) > per_page else None
    return render_template("posts/index.html", posts=posts[:per_page], newer=None, older=older)


def create_app() -> Flask:
    app = Flask(blog.__name__)
    app.add_url_rule("/", "posts.index", index)
    # The links the templates draw; the baseline serves only the index.
    for rule, endpoint in [
        ("/users", "posts.users"),
        ("/users/<username>", "posts.user"),
        ("/post/<int:id>", "posts.detail"),
        ("/create", "posts.create"),
        ("/auth/register", "auth.register"),
        ("/auth/login", "auth.login"),
        ("/auth/logout", "auth.logout"),
    ]:
        app.add_url_rule(rule, endpoint)
    app.teardown_appcontext(close_db)
    return app
