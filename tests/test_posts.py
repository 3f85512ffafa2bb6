import html
import re
from datetime import datetime

import pytest
from sqlalchemy import delete, event, insert, select

from blog.db import get_db
from blog.models import Post, User

from .pages import error_beside, field_rules, flashes, form_fields
from .snapshot import count_rows


def add_posts(app, count, author_id=None):
    with app.app_context():
        db = get_db()
        db.execute(
            insert(Post),
            [
                {
                    "title": f"Post {n}",
                    "body": f"Body {n}",
                    "author_id": author_id,
                    "created": datetime(2022, 1, 1),
                }
                for n in range(count)
            ],
        )
        db.commit()


def test_index_lists_posts_newest_first(client, auth):
    page = client.get("/").get_data(as_text=True)
    assert page.index("test title") < page.index("Written before accounts")
    assert "Log in" in page and "Register" in page

    auth.login()
    page = client.get("/").get_data(as_text=True)
    assert "Log out" in page and 'href="/create"' in page


def test_index_pages_through_every_post_once(app, client):
    add_posts(app, 7)  # 9 posts in all, 3 a page
    seen, url = [], "/"
    while url:
        page = client.get(url).get_data(as_text=True)
        seen += [line for line in page.splitlines() if "<h2>" in line]
        older = [part for part in page.split('"') if "before=" in part]
        url = older[0].replace("&amp;", "&") if older else None
    assert len(seen) == 9 and len(set(seen)) == 9
    assert "Written before accounts" in seen[-1]


def titles_on(page: str) -> list[str]:
    return re.findall(r"<h2><a [^>]*>([^<]*)</a></h2>", page)


def pager(page: str) -> dict[str, str]:
    """The page's links to the pages of newer and older posts, by their words."""
    links = re.findall(r'<a [^>]*href="([^"]*)"[^>]*>[^<]*?((?:Newer|Older) posts)', page)
    return {words: html.unescape(href) for href, words in links}


@pytest.mark.parametrize("path", ["/", "/users/other"])
def test_pages_go_both_ways_by_keyset(app, client, path):
    if path == "/":
        add_posts(app, 8)  # and the 2 posts every test starts with
    else:
        add_posts(app, 10, author_id=2)
        add_posts(app, 3)  # not other's: never on other's pages
    pages, url = [], path
    while True:  # down to the oldest page
        page = client.get(url).get_data(as_text=True)
        pages.append(titles_on(page))
        if "Older posts" not in pager(page):
            break
        url = pager(page)["Older posts"]
        assert "before=" in url
    back = [titles_on(page)]
    while "Newer posts" in pager(page):  # and back up to the newest
        url = pager(page)["Newer posts"]
        assert "after=" in url
        page = client.get(url).get_data(as_text=True)
        back.append(titles_on(page))
    assert back == pages[::-1]
    assert [len(titles) for titles in pages] == [3, 3, 3, 1]
    assert len({title for titles in pages for title in titles}) == 10


def test_later_pages_look_unlike_the_first(app, client):
    add_posts(app, 7)  # 9 posts in all, 3 a page
    first = client.get("/").get_data(as_text=True)
    assert "<h1>Posts</h1>" in first and "Newer posts" not in pager(first)
    third = client.get(
        pager(client.get(pager(first)["Older posts"]).get_data(as_text=True))["Older posts"]
    )
    page = third.get_data(as_text=True)
    assert "<h1>Older posts</h1>" in page and "<title>Older posts - Blog</title>" in page
    assert list(pager(page)) == ["Newer posts"]  # the oldest page


def test_page_past_the_oldest_post_leads_back_to_the_first(client):
    page = client.get("/", query_string={"before": 1}).get_data(as_text=True)
    assert titles_on(page) == [] and "No posts yet." in page
    assert pager(page) == {"Newer posts": "/"}


@pytest.mark.parametrize("after", [2**31, 2**63 - 1])
def test_page_after_every_id_shows_the_newest_posts(client, after):
    page = client.get("/", query_string={"after": after}).get_data(as_text=True)
    assert titles_on(page) == ["test title", "Written before accounts"]
    assert pager(page) == {}


@pytest.mark.parametrize("before", [2**31, 2**63 - 1])
def test_page_cursor_past_every_id_shows_the_newest_posts(client, before):
    # Beyond a 32-bit INTEGER column too, as on PostgreSQL.
    page = client.get("/", query_string={"before": before}).get_data(as_text=True)
    assert page.index("test title") < page.index("Written before accounts")


@pytest.mark.parametrize("value", ["abc", "-1", "0", "1.5", "٣", str(2**63), "9" * 5000])
@pytest.mark.parametrize("cursor", ["before", "after"])
def test_malformed_page_cursor_is_404(client, cursor, value):
    response = client.get("/", query_string={cursor: value})
    assert response.status_code == 404
    assert f"There is no page of posts {cursor} " in response.get_data(as_text=True)


def test_page_both_before_and_after_a_post_is_404(client):
    response = client.get("/", query_string={"before": 5, "after": 1})
    assert response.status_code == 404
    assert "either before or after" in response.get_data(as_text=True)


def test_post_page_shows_post_and_author(client):
    page = client.get("/post/2").get_data(as_text=True)
    assert "test title" in page and "test\nbody" in page
    assert 'href="/users/test"' in page


def test_post_written_before_accounts_shows_no_author(client):
    page = client.get("/post/1").get_data(as_text=True)
    assert "Written before accounts" in page
    assert "by an unknown author" in page and "before accounts)" not in page


def test_a_byline_gives_the_time_in_a_time_element(client):
    page = client.get("/post/2").get_data(as_text=True)
    assert '<time datetime="2021-01-01T00:00:00Z">2021-01-01 00:00 UTC</time>' in page


def test_the_byline_comes_right_after_the_title(client, auth):
    auth.login()
    page = client.get("/post/2").get_data(as_text=True)
    title, byline, edit = (page.index(text) for text in ("<h1>", 'class="about"', ">Edit</a>"))
    assert title < byline < edit


def test_an_authors_page_does_not_repeat_their_name_on_each_post(client, auth):
    auth.login()
    for n in range(3):
        auth.post("/create", {"title": f"mine {n}", "body": "text"})
    page = client.get("/users/test").get_data(as_text=True)
    content = page[page.index("<main") :]
    assert 'href="/users/test"' not in content.split("</h1>", 1)[1]
    assert content.count('class="about"') == 3  # each post still has its date


@pytest.mark.parametrize(
    "path",
    [
        "/post/99",
        f"/post/{2**31}",
        "/post/abc",
        "/post/0",
        "/post/-1",
        f"/post/{2**63}",
        "/post/" + "9" * 5000,
        "/post/1.0",
        "/users/nobody",
    ],
)
def test_missing_or_malformed_id_is_404(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert "404 Not Found" in response.get_data(as_text=True)


def test_users_page_lists_users(client):
    page = client.get("/users").get_data(as_text=True)
    assert page.index("other") < page.index('href="/users/test"')


def test_user_page_lists_only_that_users_posts(app, client):
    add_posts(app, 4, author_id=2)
    page = client.get("/users/test").get_data(as_text=True)
    assert "test title" in page and "Post " not in page
    page = client.get("/users/other").get_data(as_text=True)
    assert page.count("<h2>") == 3 and "before=" in page  # a second page exists


@pytest.mark.parametrize("path", ["/create", "/post/2/update", "/post/2/delete"])
def test_writing_requires_login(client, auth, path):
    response = auth.post(path, {"title": "t", "body": "b"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/auth/login"


def test_create(app, client, auth):
    auth.login()
    assert client.get("/create").status_code == 200
    response = auth.post("/create", {"title": "created", "body": "new body"})
    assert response.status_code == 302
    with app.app_context():
        post = get_db().scalar(select(Post).where(Post.title == "created"))
        assert post.body == "new body" and post.author.username == "test"
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "<h1>created</h1>" in page
    assert flashes(page, "status") == ["Post created."]


def test_update(app, client, auth):
    auth.login()
    page = client.get("/post/2/update").get_data(as_text=True)
    assert form_fields(page) == {"title": "test title", "body": "test\nbody"}
    response = auth.post("/post/2/update", {"title": "updated", "body": "changed"})
    with app.app_context():
        post = get_db().get(Post, 2)
        assert (post.title, post.body) == ("updated", "changed")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert flashes(page, "status") == ["Post saved."]


def test_delete(app, client, auth):
    auth.login()
    response = auth.post("/post/2/delete")
    assert response.headers["Location"] == "/"
    with app.app_context():
        assert get_db().get(Post, 2) is None
    assert flashes(client.get("/").get_data(as_text=True), "status") == ["Post deleted."]


@pytest.mark.parametrize("path", ["/post/2/update", "/post/2/delete"])
def test_only_the_author_may_change_a_post(app, client, auth, path):
    auth.login("other")
    response = auth.post(path, {"title": "hijacked", "body": "x"})
    assert response.status_code == 403
    assert "Only a post&#39;s author" in response.get_data(as_text=True)
    assert client.get("/post/2/update").status_code == 403
    assert "Edit" not in client.get("/post/2").get_data(as_text=True)
    with app.app_context():
        assert get_db().get(Post, 2).title == "test title"


@pytest.mark.parametrize("path", ["/post/1/update", "/post/1/delete"])
def test_posts_from_before_accounts_cannot_be_changed(app, auth, path):
    auth.login()
    assert auth.post(path, {"title": "claimed", "body": "x"}).status_code == 403
    with app.app_context():
        assert get_db().get(Post, 1).title == "Written before accounts"


@pytest.mark.parametrize("path", ["/post/99/update", "/post/99/delete"])
def test_changing_a_missing_post_is_404(auth, path):
    auth.login()
    assert auth.post(path, {"title": "t", "body": "b"}).status_code == 404


@pytest.mark.parametrize(
    ("title", "body", "message"),
    [
        ("", "body", "Title is required."),
        ("   ", "body", "Title is required."),
        ("x" * 201, "body", "Title must be at most 200 characters long."),
        ("title", "", "Body is required."),
        ("title", " \n ", "Body is required."),
        (
            "title",
            "é" * 32_768,
            "Body is too long: keep it to about 16,000 characters (65,535 bytes in UTF-8).",
        ),
        ("a\x00b", "body", "Title must not contain a NUL character."),
        ("title", "a\x00b", "Body must not contain a NUL character."),
    ],
)
@pytest.mark.parametrize("path", ["/create", "/post/2/update"])
def test_post_validation(app, auth, path, title, body, message):
    auth.login()
    count = count_rows(app, Post)
    response = auth.post(path, {"title": title, "body": body})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert flashes(page, "alert") == [message]
    field = message.split()[0].lower()  # "Title ..." or "Body ..."
    assert error_beside(page, field) == message
    assert error_beside(page, {"title": "body", "body": "title"}[field]) is None
    assert count_rows(app, Post) == count
    with app.app_context():
        assert get_db().get(Post, 2).title == "test title"


def test_largest_allowed_title_and_body_are_accepted(app, auth):
    auth.login()
    response = auth.post("/create", {"title": "Ü" * 200, "body": "🎉" * (65_535 // 4)})
    assert response.status_code == 302
    with app.app_context():
        post = get_db().scalar(select(Post).order_by(Post.id.desc()))
        assert (post.title, post.body) == ("Ü" * 200, "🎉" * (65_535 // 4))


def test_user_text_is_escaped(client, auth):
    auth.login()
    auth.post("/create", {"title": "<script>alert(1)</script>", "body": "<b>bold</b>"})
    for path in ("/", "/post/3", "/users/test"):
        page = client.get(path).get_data(as_text=True)
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def count_statements(app, client, path):
    statements = []

    def record(conn, cursor, statement, *args):
        if not statement.startswith(("BEGIN", "PRAGMA")):
            statements.append(statement)

    engine = app.extensions["db_engine"]
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert client.get(path).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return len(statements)


@pytest.mark.parametrize("path", ["/", "/users/test", "/post/2"])
def test_statements_per_page_do_not_grow_with_posts_or_authors(app, client, auth, path):
    auth.login()
    few = count_statements(app, client, path)

    app.config["POSTS_PER_PAGE"] = 50
    with app.app_context():
        db = get_db()
        db.execute(
            insert(User), [{"username": f"author{n}", "password_hash": "x"} for n in range(40)]
        )
        authors = db.scalars(select(User.id)).all()
        db.execute(
            insert(Post),
            [
                {
                    "title": f"t{n}",
                    "body": "b",
                    "author_id": authors[n % 40],
                    "created": datetime(2023, 1, 1),
                }
                for n in range(100)
            ],
        )
        db.execute(
            insert(Post),
            [
                {"title": f"mine {n}", "body": "b", "author_id": 1, "created": datetime(2023, 1, 1)}
                for n in range(60)
            ],
        )
        db.commit()

    assert count_statements(app, client, path) == few


@pytest.mark.parametrize("path", ["/create", "/post/2/update"])
def test_post_form_shows_every_error_at_once_and_keeps_what_was_typed(auth, path):
    auth.login()
    response = auth.post(path, {"title": "", "body": "é" * 32_768})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert flashes(page, "alert") == [
        "Title is required.",
        "Body is too long: keep it to about 16,000 characters (65,535 bytes in UTF-8).",
    ]
    assert error_beside(page, "title") == "Title is required."
    assert error_beside(page, "body").startswith("Body is too long")
    # The emptied title stays empty: not the saved one back.
    assert form_fields(page) == {"title": "", "body": "é" * 32_768}


@pytest.mark.parametrize("path", ["/create", "/post/2/update"])
def test_post_form_states_its_limits_and_the_browser_checks_them(client, auth, path):
    auth.login()
    page = client.get(path).get_data(as_text=True)
    assert "Up to 200 characters" in page and "Up to about 16,000 characters" in page
    assert field_rules(page, "title") == {
        "required": "",
        "maxlength": "200",
        "autocomplete": "off",
    }
    # A UTF-8 byte limit: the browser counts UTF-16 units, never more than the bytes.
    assert field_rules(page, "body") == {
        "required": "",
        "maxlength": "65535",
        "autocomplete": "off",
    }


def test_edit_page_can_be_left_without_saving(client, auth):
    auth.login()
    page = client.get("/post/2/update").get_data(as_text=True)
    assert '<a class="button" href="/post/2">Cancel</a>' in page


def test_delete_asks_first_on_a_page_of_its_own(app, client, auth):
    auth.login()
    edit = client.get("/post/2/update").get_data(as_text=True)
    assert '<a class="button danger" href="/post/2/delete">Delete</a>' in edit
    page = client.get("/post/2/delete").get_data(as_text=True)
    assert "<h1>Delete “test title”?</h1>" in page
    assert '<form action="/post/2/delete" method="post">' in page
    assert '<button type="submit" class="danger">Delete</button>' in page
    assert '<a class="button" href="/post/2">Cancel</a>' in page
    with app.app_context():
        assert get_db().get(Post, 2) is not None  # asking deletes nothing


def test_only_the_author_is_asked_to_delete(client, auth):
    assert client.get("/post/2/delete").headers["Location"] == "/auth/login"
    auth.login("other")
    assert client.get("/post/2/delete").status_code == 403


def test_pages_carry_no_inline_script_or_style(app, client, auth):
    # A Content-Security-Policy without 'unsafe-inline' would block them.
    add_posts(app, 5)
    auth.login()
    paths = ["/", "/?before=3", "/post/2", "/post/2/update", "/post/2/delete", "/create"]
    paths += ["/users", "/users/test", "/post/99"]
    pages = [client.get(path).get_data(as_text=True) for path in paths]
    auth.logout()
    pages += [client.get(path).get_data(as_text=True) for path in ["/auth/login", "/auth/register"]]
    for page in pages:
        assert not re.search(r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=", page)


def test_users_page_says_when_nobody_has_registered(app, client):
    with app.app_context():
        db = get_db()
        db.execute(delete(Post))
        db.execute(delete(User))
        db.commit()
    page = client.get("/users").get_data(as_text=True)
    assert re.search(r"<p[^>]*>Nobody has registered yet.</p>", page)
    assert not re.search(r"<li>\s*Nobody", page)  # not a user in a list


@pytest.mark.parametrize("path", ["/", "/post/2", "/auth/login", "/post/99"])
def test_every_page_names_the_favicon(client, path):
    page = client.get(path).get_data(as_text=True)
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page


@pytest.mark.parametrize("path", ["/static/favicon.svg", "/favicon.ico"])
def test_favicon_is_served_where_browsers_look(client, path):
    # Browsers ask for /favicon.ico on their own, whatever the page names.
    response = client.get(path, follow_redirects=True)
    assert response.status_code == 200
    assert response.mimetype == "image/svg+xml"
    assert response.get_data(as_text=True).startswith("<svg")
    response.close()


def test_a_users_page_answers_to_any_case_of_the_name(client):
    response = client.get("/users/TEST?before=5")
    assert response.status_code == 301
    assert response.headers["Location"] == "/users/test?before=5"
    assert client.get("/users/nobody").status_code == 404


@pytest.mark.parametrize("query", ["username=x", "endpoint=x", "_method=DELETE", "_external=1"])
def test_a_query_string_never_steers_the_redirect(client, query):
    response = client.get(f"/users/TEST?{query}&before=5", headers={"Host": "evil.example"})
    assert response.status_code == 301
    assert response.headers["Location"] == "/users/test?before=5"


def test_a_user_name_with_a_nul_is_nobodys(client):
    response = client.get("/users/a%00b")
    assert response.status_code == 404
    assert "There is no user" in response.get_data(as_text=True)


def test_a_form_of_too_many_fields_is_refused_before_it_is_read(app, auth):
    auth.login()
    count = count_rows(app, Post)
    response = auth.post(
        "/create", {"title": "t", "body": "b", **{f"f{i}": "" for i in range(1000)}}
    )
    assert response.status_code == 400
    assert "A form may have at most 1,000 fields." in response.get_data(as_text=True)
    assert count_rows(app, Post) == count


def users_on(page: str) -> list[str]:
    return re.findall(r'<li><a href="/users/([^"]+)"', page)


def test_users_are_paged_by_name_both_ways(app, client):
    app.config["USERS_PER_PAGE"] = 1
    first = client.get("/users").get_data(as_text=True)
    assert users_on(first) == ["other"]
    assert "Earlier names" not in first
    assert 'href="/users?after=other"' in first
    second = client.get("/users?after=other").get_data(as_text=True)
    assert users_on(second) == ["test"]
    assert "Later names" not in second
    assert 'href="/users?before=test"' in second
    assert users_on(client.get("/users?before=test").get_data(as_text=True)) == ["other"]
    past_the_end = client.get("/users?after=zzz").get_data(as_text=True)
    assert users_on(past_the_end) == [] and "No names come this far." in past_the_end


@pytest.mark.parametrize("cursor", ["after=a%00b", "before=" + "x" * 81, "after=no way"])
def test_a_page_of_users_no_name_could_start_is_404(client, cursor):
    response = client.get(f"/users?{cursor}")
    assert response.status_code == 404
    assert "There is no page of users" in response.get_data(as_text=True)


def test_a_post_the_index_cuts_short_says_read_more(app, client, auth):
    auth.login()
    auth.post("/create", {"title": "long", "body": "word " * 100})
    auth.post("/create", {"title": "short", "body": "word " * 10})
    page = client.get("/").get_data(as_text=True)
    # The link's own text names the post (Lighthouse's link-text audit reads
    # that, not aria-label); "about long" is for screen readers alone.
    links = re.findall(r'<a class="more"[^>]*>(.*?)</a>', page, re.DOTALL)
    assert [re.sub(r"<[^>]+>", "", link) for link in links] == ["Read more about long"]
    assert "aria-label" not in links[0]


def test_a_post_page_has_its_heading_in_its_article_and_a_description(client):
    page = client.get("/post/2").get_data(as_text=True)
    article = page[page.index("<article") : page.index("</article>")]
    assert "<h1>test title</h1>" in article
    assert '<meta name="description" content="test\nbody">' in page
    assert '<meta name="description" content="A small blog' in client.get("/").get_data(
        as_text=True
    )
