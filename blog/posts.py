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
from sqlalchemy import BigInteger, Select, bindparam, select
from sqlalchemy.orm import joinedload

from .auth import login_required
from .db import get_db
from .models import BODY_MAX_BYTES, MAX_ID, TITLE_MAX_LENGTH, Post, User

bp = Blueprint("posts", __name__)

# A page of posts, newest first, from :newest down. Keyset pagination reads
# only the rows it shows, however deep the page; OFFSET would read and skip
# every row before it. Built once: SQLAlchemy works out a new statement's
# cache key each time it runs one, which costs as much as the query itself.
PAGE_OF_POSTS = (
    select(Post)
    .options(joinedload(Post.author))
    # BigInteger: any id a URL may name, even beyond a server's 32-bit INTEGER.
    .where(Post.id <= bindparam("newest", type_=BigInteger))
    .order_by(Post.id.desc())
    .limit(bindparam("limit"))
)
PAGE_OF_AUTHORS_POSTS = PAGE_OF_POSTS.where(Post.author_id == bindparam("author_id"))
USER_NAMED = select(User).where(User.username == bindparam("username"))
POST_WITH_ID = (
    select(Post)
    .options(joinedload(Post.author))
    .where(Post.id == bindparam("id", type_=BigInteger))
)


@bp.context_processor
def post_limits() -> dict:
    """The limits the post form states and the browser checks."""
    return {"title_max": TITLE_MAX_LENGTH, "body_max_bytes": BODY_MAX_BYTES}


def page_of_posts(query: Select, **params) -> tuple[list[Post], int | None]:
    """One page of posts from the query, and the id the next older page starts before."""
    newest = MAX_ID
    before = request.args.get("before")
    if before is not None:
        # Like <id:...> in a URL; the length check keeps int() from refusing
        # a string of thousands of digits with an error.
        digits = before.isascii() and before.isdigit() and len(before) <= len(str(MAX_ID))
        if not (digits and 1 <= int(before) <= MAX_ID):
            abort(404, f"There is no page of posts before {before[:20]!r}.")
        newest = int(before) - 1
    per_page = current_app.config["POSTS_PER_PAGE"]
    posts = get_db().scalars(query, {"newest": newest, "limit": per_page + 1, **params}).all()
    older = posts[per_page - 1].id if len(posts) > per_page else None
    return posts[:per_page], older


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


def post_form_errors(title: str, body: str) -> list[str]:
    """Everything wrong with a post's title and body, to show at once."""
    errors = []
    if not title.strip():
        errors.append("Title is required.")
    elif len(title) > TITLE_MAX_LENGTH:
        errors.append(f"Title must be at most {TITLE_MAX_LENGTH} characters long.")
    if not body.strip():
        errors.append("Body is required.")
    elif len(body.encode()) > BODY_MAX_BYTES:
        errors.append(f"Body must be at most {BODY_MAX_BYTES:,} bytes long in UTF-8.")
    return errors


@bp.route("/")
def index():
    posts, older = page_of_posts(PAGE_OF_POSTS)
    return render_template("posts/index.html", posts=posts, older=older)


@bp.route("/post/<id:id>")
def detail(id: int):
    return render_template("posts/detail.html", post=get_post(id, check_author=False))


@bp.route("/users")
def users():
    users = get_db().scalars(select(User).order_by(User.username)).all()
    return render_template("posts/users.html", users=users)


@bp.route("/users/<username>")
def user(username: str):
    author = get_db().scalar(USER_NAMED, {"username": username})
    if author is None:
        abort(404, f"There is no user {username!r}.")
    posts, older = page_of_posts(PAGE_OF_AUTHORS_POSTS, author_id=author.id)
    return render_template("posts/user.html", author=author, posts=posts, older=older)


def submitted_post() -> tuple[dict[str, str], list[str]]:
    """The form's title and body as typed, and what is wrong with them (flashed)."""
    form = {name: request.form.get(name, "") for name in ("title", "body")}
    errors = post_form_errors(**form)
    for error in errors:
        flash(error, "error")
    return form, errors


@bp.route("/create", methods=("GET", "POST"))
@login_required
def create():
    if request.method == "GET":
        return render_template("posts/create.html", form={"title": "", "body": ""})
    form, errors = submitted_post()
    if errors:
        return render_template("posts/create.html", form=form), 400
    post = Post(**form, author=g.user)
    db = get_db()
    db.add(post)
    db.commit()
    flash("Post created.", "success")
    return redirect(url_for("posts.detail", id=post.id))


@bp.route("/post/<id:id>/update", methods=("GET", "POST"))
@login_required
def update(id: int):
    post = get_post(id)
    if request.method == "GET":
        form = {"title": post.title, "body": post.body}
        return render_template("posts/update.html", post=post, form=form)
    form, errors = submitted_post()
    if errors:
        return render_template("posts/update.html", post=post, form=form), 400
    post.title, post.body = form["title"], form["body"]
    get_db().commit()
    flash("Post saved.", "success")
    return redirect(url_for("posts.detail", id=post.id))


@bp.post("/post/<id:id>/delete")
@login_required
def delete(id: int):
    db = get_db()
    db.delete(get_post(id))
    db.commit()
    flash("Post deleted.", "success")
    return redirect(url_for("posts.index"))
