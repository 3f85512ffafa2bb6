import os
import secrets
import tempfile
from pathlib import Path

from flask import Flask, current_app, redirect, render_template, url_for
from werkzeug.exceptions import HTTPException, SecurityError
from werkzeug.routing import IntegerConverter
from werkzeug.wrappers import Response

from database_safety import SettingProblem, database_url, whole_setting

from . import auth, csrf, db, headers, hosts, pagecache, posts
from .maintenance import check_database, migration_scripts
from .models import MAX_ID
from .sessions import CookieSignedNowAndThen


class IdConverter(IntegerConverter):
    """A row id in a URL: a positive integer the database can compare with."""

    def __init__(self, map) -> None:
        super().__init__(map, min=1, max=MAX_ID)


def create_app(test_config: dict | None = None) -> Flask:
    """The blog, on a database at its latest revision.

    Every way of starting it (python run.py, flask run, a WSGI server given
    blog:create_app()) refuses the same way a database that is missing or not
    migrated. CHECK_DATABASE=False is for the commands and tests that are
    about to create the database.
    """
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        ALEMBIC_INI=db.ALEMBIC_INI,
        CHECK_DATABASE=True,
        POSTS_PER_PAGE=10,
        USERS_PER_PAGE=50,
        MAX_CONTENT_LENGTH=1024 * 1024,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # Cookies are Secure over HTTPS (blog/sessions.py); behind a proxy that
        # speaks HTTPS to browsers and HTTP to the blog, BLOG_SECURE_COOKIES=1.
        SESSION_COOKIE_SECURE=os.environ.get("BLOG_SECURE_COOKIES") == "1",
        # The host names the blog answers to, e.g. "blog.example.org,www.blog.example.org";
        # any other Host header gets 400. Unset: any (its redirects name no host anyway).
        TRUSTED_HOSTS=[name.strip() for name in os.environ["BLOG_HOSTS"].split(",")]
        if os.environ.get("BLOG_HOSTS")
        else None,
        # A session ends after a day without a request, and two weeks after login.
        SESSION_IDLE_SECONDS=whole_setting("BLOG_SESSION_IDLE_SECONDS", 24 * 3600, "seconds"),
        SESSION_MAX_SECONDS=whole_setting("BLOG_SESSION_MAX_SECONDS", 14 * 24 * 3600, "seconds"),
        # Over HTTPS, Strict-Transport-Security for this long; 0: none.
        HSTS_SECONDS=whole_setting("BLOG_HSTS_SECONDS", 0, "seconds"),
        # The pages each worker process keeps (blog/pagecache.py), in bytes.
        PAGE_CACHE_BYTES=whole_setting("BLOG_PAGE_CACHE_BYTES", 16 * 1024 * 1024, "bytes"),
        # How passwords are hashed (werkzeug's method string): scrypt, slow on purpose.
        PASSWORD_HASH_METHOD="scrypt",
    )
    if test_config is not None:
        app.config.from_mapping(test_config)
    # Flask refuses a cookie signed longer ago than this, and requests sign it
    # anew: an idle timeout.
    app.config["PERMANENT_SESSION_LIFETIME"] = app.config["SESSION_IDLE_SECONDS"]
    app.session_interface = CookieSignedNowAndThen()
    if "DATABASE_URL" not in app.config:
        app.config["DATABASE_URL"] = database_url(db.alembic_config(app.config["ALEMBIC_INI"]))
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = os.environ.get("BLOG_SECRET_KEY") or instance_secret_key(
            Path(app.instance_path)
        )

    app.url_map.converters["id"] = IdConverter
    app.add_url_rule("/favicon.ico", "favicon", favicon)
    app.register_error_handler(HTTPException, show_error)
    app.register_error_handler(SecurityError, refuse_plainly)
    db.init_app(app)
    if app.config["CHECK_DATABASE"]:
        check_database(app.extensions["db_read_engine"], migration_scripts(app))
    # A page from the cache needs no user: looked up before auth loads one.
    pagecache.init_app(app)
    app.after_request(headers.add_security_headers)
    app.register_blueprint(auth.bp)
    app.register_blueprint(posts.bp)
    # After auth's before_app_request has loaded the user: the page refusing a
    # form (a bad token, or a body over MAX_CONTENT_LENGTH, which reading the
    # token finds) still shows who is logged in.
    csrf.init_app(app)
    hosts.init_app(app)  # last: its check comes before the page cache answers anything
    return app


def instance_secret_key(instance_path: Path) -> str:
    """A key made once for this installation and kept out of the repository.

    Processes starting together may each make one: the key is written whole to
    a file of its own, then linked into place, which fails if another process
    got there first. Every process reads the one key that won, never a part.
    """
    key_file = instance_path / "secret_key"
    if not key_file.exists():
        # Else the error names only a path: say what the key is for and how else to give one.
        folder = instance_path if instance_path.is_dir() else instance_path.parent
        if not os.access(folder, os.W_OK):
            raise SettingProblem(
                f"the blog cannot keep its secret key in {instance_path} (the folder "
                f"{folder} is read-only); set BLOG_SECRET_KEY, or make it writable"
            )
        # The owner's alone, whatever the umask: whoever can write here picks the key.
        instance_path.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, draft = tempfile.mkstemp(dir=instance_path, prefix=".secret_key.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
                f.flush()
                os.fsync(f.fileno())
            os.link(draft, key_file)  # never replaces a key that sessions depend on
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    return key_file.read_text().strip()


def favicon() -> Response:
    # Browsers ask for /favicon.ico whatever icon a page names.
    return redirect(url_for("static", filename="favicon.svg"), 301)


def show_error(error: HTTPException):
    # Keep the error's own headers, such as Allow (405) and Retry-After (503).
    headers = [(name, value) for name, value in error.get_headers() if name != "Content-Type"]
    return render_template("error.html", error=error), error.code, headers


def refuse_plainly(error: SecurityError) -> Response:
    # A Host not in BLOG_HOSTS: no URL of the blog can be built for it, so
    # the page with its links cannot be either.
    current_app.logger.warning("refused a request: %s", error.description)
    return Response(
        f"{error.code} {error.name}: {error.description}\n", error.code, mimetype="text/plain"
    )
