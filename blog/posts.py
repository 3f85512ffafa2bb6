from collections.abc import Sequence
from typing import Any, NamedTuple

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import BigInteger, Select, bindparam, insert, select
from sqlalchemy.orm import joinedload

from .auth import USER_NAMED_IN_ANY_CASE, USERNAME_PATTERN, login_required
from .db import get_db
from .forms import FieldErrors, refused
from .models import BODY_MAX_BYTES, MAX_ID, TITLE_MAX_LENGTH, USERNAME_MAX_LENGTH, Post, User

bp = Blueprint("posts", __name__)


class Listing(NamedTuple):
    """The statements that page through some posts by keyset, both ways.

    Keyset pagination reads only the rows it shows, however deep the page;
    OFFSET would read and skip every row before it. Built once: SQLAlchemy
    works out a new statement's cache key each time it runs one, which costs
    as much as the query itself.
    """

    older: Select  # a page from :newest down, newest first
    newer: Select  # a page from just above :after up, oldest first
    any_older: Select  # an id at or below :newest, if there is one
    any_newer: Select  # an id above :after, if there is one


def listing(*criteria) -> Listing:
    # BigInteger: any id a URL may name, even beyond a server's 32-bit INTEGER.
    at_or_below = Post.id <= bindparam("newest", type_=BigInteger)
    above = Post.id > bindparam("after", type_=BigInteger)
    posts = select(Post).options(joinedload(Post.author)).where(*criteria)
    ids = select(Post.id).where(*criteria).limit(1)
    return Listing(
        older=posts.where(at_or_below).order_by(Post.id.desc()).limit(bindparam("limit")),
        newer=posts.where(above).order_by(Post.id.asc()).limit(bindparam("limit")),
        any_older=ids.where(at_or_below),
        any_newer=ids.where(above),
    )


ALL_POSTS = listing()
AUTHORS_POSTS = listing(Post.author_id == bindparam("author_id"))
# Built once, like the listings; the values come with each post.
NEW_POST = insert(Post).returning(Post.id)
POST_WITH_ID = (
    select(Post)
    .options(joinedload(Post.author))
    .where(Post.id == bindparam("id", type_=BigInteger))
)


# The body's limit in characters a writer can picture: any character takes at
# most 4 bytes of UTF-8 (an English letter one), rounded down to thousands.
BODY_CHARACTERS = BODY_MAX_BYTES // 4 // 1000 * 1000


@bp.context_processor
def post_limits() -> dict:
    """The limits the post form states and the browser checks."""
    return {
        "title_max": TITLE_MAX_LENGTH,
        "body_max_bytes": BODY_MAX_BYTES,
        "body_characters": BODY_CHARACTERS,
        "body_english_characters": BODY_MAX_BYTES // 1000 * 1000,
    }


def page_cursor(name: str) -> int | None:
    """The id in ?before= or ?after=, or None; a 404 for one that names no page."""
    value = request.args.get(name)
    if value is None:
        return None
    # Like <id:...> in a URL; the length check keeps int() from refusing a
    # string of thousands of digits with an error.
    digits = value.isascii() and value.isdigit() and len(value) <= len(str(MAX_ID))
    if not (digits and 1 <= int(value) <= MAX_ID):
        abort(404, f"There is no page of posts {name} {value[:20]!r}.")
    return int(value)


class Page(NamedTuple):
    posts: Sequence[Post]
    # The query strings of the pages just newer and just older, or None when
    # there are no such posts; {} is the first page.
    newer: dict | None
    older: dict | None


def page_of_posts(posts: Listing, **params) -> Page:
    """The page of posts that ?before=<id> or ?after=<id> asks for, newest first.

    Without either, the newest posts. ?before=<id> gives the posts just older
    than that one, ?after=<id> those just newer.
    """
    before, after = page_cursor("before"), page_cursor("after")
    if before is not None and after is not None:
        abort(404, "A page of posts is either before or after a post, not both.")
    per_page = current_app.config["POSTS_PER_PAGE"]
    db = get_db()
    if after is not None:
        # The posts just newer, taken oldest first, then turned newest first.
        page = db.scalars(posts.newer, {"after": after, "limit": per_page + 1, **params}).all()
        if page:
            newer = {"after": page[per_page - 1].id} if len(page) > per_page else None
            page = page[:per_page][::-1]
            any_older = db.scalar(posts.any_older, {"newest": page[-1].id - 1, **params})
            return Page(page, newer, {"before": page[-1].id} if any_older is not None else None)
        # Nothing is newer than that: the newest posts, as with no cursor.
    newest = MAX_ID if before is None else before - 1
    page = db.scalars(posts.older, {"newest": newest, "limit": per_page + 1, **params}).all()
    older = {"before": page[per_page - 1].id} if len(page) > per_page else None
    page = page[:per_page]
    newer = None
    if before is not None:
        above = page[0].id if page else newest
        if db.scalar(posts.any_newer, {"after": above, **params}) is not None:
            # An empty page, past the oldest post, leads back to the first.
            newer = {"after": above} if page else {}
    return Page(page, newer, older)


def get_post(id: int, check_author: bool = True) -> Post:
    """The post, or abort: 404 if there is none, 403 if it is not the user's.

    Posts from before accounts existed have no author, so nobody may change them.
    """
    post = get_db().scalar(POST_WITH_ID, {"id": id})
    if post is None:
        abort(404, f"Post {id} doesn't exist.")
    if check_author and post.author_id != g.user.id:
        abort(403, "Only a post's author may change it.")
    return post


def post_form_errors(title: str, body: str) -> FieldErrors:
    """Everything wrong with a post's title and body, to show at once."""
    errors: FieldErrors = {"title": [], "body": []}
    for field, text in (("title", title), ("body", body)):
        if "\x00" in text:
            # PostgreSQL cannot store it; refused on every database alike.
            errors[field].append(f"{field.capitalize()} must not contain a NUL character.")
    if not title.strip():
        errors["title"].append("Title is required.")
    elif len(title) > TITLE_MAX_LENGTH:
        errors["title"].append(f"Title must be at most {TITLE_MAX_LENGTH} characters long.")
    if not body.strip():
        errors["body"].append("Body is required.")
    elif len(body.encode()) > BODY_MAX_BYTES:
        errors["body"].append(
            f"Body is too long: keep it to about {BODY_CHARACTERS:,} characters "
            f"({BODY_MAX_BYTES:,} bytes in UTF-8)."
        )
    return errors


@bp.route("/")
def index():
    page = page_of_posts(ALL_POSTS)
    return render_template("posts/index.html", **page._asdict())


@bp.route("/post/<id:id>")
def detail(id: int):
    return render_template("posts/detail.html", post=get_post(id, check_author=False))


# Everyone by name, a page at a time by keyset, like the posts.
USERS_AFTER = (
    select(User)
    .where(User.username_key > bindparam("name"))
    .order_by(User.username_key)
    .limit(bindparam("limit"))
)
USERS_BEFORE = (
    select(User)
    .where(User.username_key < bindparam("name"))
    .order_by(User.username_key.desc())
    .limit(bindparam("limit"))
)
ANY_USER_AFTER = select(User.id).where(User.username_key > bindparam("name")).limit(1)
ANY_USER_BEFORE = select(User.id).where(User.username_key < bindparam("name")).limit(1)


def name_cursor(name: str) -> str | None:
    """The name in ?before= or ?after=, in lower case, or None; a 404 for one no user can have."""
    value = request.args.get(name)
    if value is None:
        return None
    if len(value) > USERNAME_MAX_LENGTH or not USERNAME_PATTERN.fullmatch(value):
        abort(404, f"There is no page of users {name} {value[:20]!r}.")
    return value.lower()


@bp.route("/users")
def users():
    """A page of users by name: ?after=<name> the next, ?before=<name> the one before."""
    per_page = current_app.config["USERS_PER_PAGE"]
    before, after = name_cursor("before"), name_cursor("after")
    db = get_db()
    if before is not None:
        users = db.scalars(USERS_BEFORE, {"name": before, "limit": per_page + 1}).all()[::-1]
        page = users[-per_page:]
        earlier = {"before": page[0].username_key} if len(users) > per_page else None
        later = {"after": page[-1].username_key} if page else {}
    else:
        users = db.scalars(USERS_AFTER, {"name": after or "", "limit": per_page + 1}).all()
        page = users[:per_page]
        later = {"after": page[-1].username_key} if len(users) > per_page else None
        earlier = None
        if after and db.scalar(ANY_USER_BEFORE, {"name": page[0].username_key if page else after}):
            earlier = {"before": page[0].username_key} if page else {}
    return render_template("posts/users.html", users=page, earlier=earlier, later=later)


@bp.route("/users/<username>")
def user(username: str):
    author = None
    if "\x00" not in username:  # no account has one, and PostgreSQL refuses to compare it
        author = get_db().scalar(USER_NAMED_IN_ANY_CASE, {"username_key": username.lower()})
    if author is None:
        abort(404, f"There is no user {username!r}.")
    if author.username != username:
        # /users/ALICE is alice's page, at the one address it has, and the same
        # page of it: only the cursor goes along, never a keyword url_for obeys.
        cursor: dict[str, Any] = {
            name: request.args[name] for name in ("before", "after") if name in request.args
        }
        return redirect(url_for("posts.user", username=author.username, **cursor), 301)
    page = page_of_posts(AUTHORS_POSTS, author_id=author.id)
    return render_template("posts/user.html", author=author, **page._asdict())


def submitted_post() -> tuple[dict[str, str], dict[str, str]]:
    """The form's title and body as typed, and what is wrong with each (flashed)."""
    form = {name: request.form.get(name, "") for name in ("title", "body")}
    return form, refused(post_form_errors(**form))


@bp.route("/create", methods=("GET", "POST"))
@login_required
def create():
    if request.method != "POST":  # GET, or HEAD: a GET without the body
        return render_template("posts/create.html", form={"title": "", "body": ""})
    form, errors = submitted_post()
    if errors:
        return render_template("posts/create.html", form=form, field_errors=errors), 400
    db = get_db()
    # An INSERT alone, on the session's connection: the ORM's handling of a new
    # object, or of an INSERT the session runs, cost more than the INSERT did.
    post_id = db.connection().scalar(NEW_POST, {**form, "author_id": g.user.id})
    db.commit()
    flash("Post created.", "success")
    return redirect(url_for("posts.detail", id=post_id))


@bp.route("/post/<id:id>/update", methods=("GET", "POST"))
@login_required
def update(id: int):
    post = get_post(id)
    if request.method != "POST":  # GET, or HEAD: a GET without the body
        form = {"title": post.title, "body": post.body}
        return render_template("posts/update.html", post=post, form=form)
    form, errors = submitted_post()
    if errors:
        page = render_template("posts/update.html", post=post, form=form, field_errors=errors)
        return page, 400
    post.title, post.body = form["title"], form["body"]
    get_db().commit()
    flash("Post saved.", "success")
    return redirect(url_for("posts.detail", id=post.id))


@bp.route("/post/<id:id>/delete", methods=("GET", "POST"))
@login_required
def delete(id: int):
    post = get_post(id)
    if request.method != "POST":  # GET, or HEAD: a GET without the body
        # Asking on a page of its own works with or without JavaScript.
        return render_template("posts/delete.html", post=post)
    db = get_db()
    db.delete(post)
    db.commit()
    flash("Post deleted.", "success")
    return redirect(url_for("posts.index"))
