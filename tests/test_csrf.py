"""Forms: only a POST that carries its session's token changes anything."""

import pytest
from sqlalchemy import create_engine

from blog.db import get_db
from blog.models import Post, User

from .pages import AuthActions, logged_in_as
from .snapshot import count_rows, rows
from .webclient import Browser


def counts(app):
    return count_rows(app, Post), count_rows(app, User)


@pytest.mark.parametrize("token", [None, "", "forged", "x" * 43])
@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/auth/register", {"username": "mallory", "password": "a good password"}),
        ("/create", {"title": "t", "body": "b"}),
        ("/post/2/update", {"title": "t", "body": "b"}),
        ("/post/2/delete", {}),
        ("/auth/logout", {}),
        ("/auth/login", {"username": "other", "password": "correct horse"}),
        ("/auth/password", {"current_password": "correct horse", "new_password": "new secret"}),
    ],
)
def test_form_without_a_valid_csrf_token_is_refused(app, client, auth, path, data, token):
    auth.login()
    before = counts(app)
    if token is not None:
        data = {**data, "csrf_token": token}
    response = client.post(path, data=data)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "security token" in page
    assert logged_in_as(page) == "test"
    assert counts(app) == before
    with app.app_context():
        assert get_db().get(Post, 2).title == "test title"
    assert logged_in_as(client.get("/").get_data(as_text=True)) == "test"  # still logged in


def test_csrf_token_of_another_session_is_refused(app, client, auth):
    other_token = AuthActions(app.test_client()).csrf_token()
    auth.login()
    response = client.post("/create", data={"title": "t", "body": "b", "csrf_token": other_token})
    assert response.status_code == 400


# Every route that changes something on POST, with a form that would change it.
FORMS = {
    "/create": {"title": "sent by another method", "body": "b"},
    "/post/1/update": {"title": "changed by another method", "body": "b"},
    "/auth/register": {"username": "mallory", "password": "a fine password"},
    "/auth/login": {"username": "author", "password": "writer password"},
    "/auth/password": {"current_password": "writer password", "new_password": "a new secret"},
    "/post/1/delete": {},
    "/auth/logout": {},
}
READ_ONLY_ROUTES = ["/", "/post/1", "/users", "/users/author"]


@pytest.mark.sqlite_only
def test_only_post_with_a_valid_token_changes_anything(served_blog, project):
    engine = create_engine(f"sqlite:///{project / 'blog.db'}")
    browser = Browser(served_blog)
    browser.sign_up("author")
    assert browser.request("/create", {"title": "the author's post", "body": "b"})[0] == 302
    browser.open_form("/create")
    before = rows(engine)

    # Each with the author's cookie and a valid token: HEAD is a GET without a body.
    for path in [*FORMS, *READ_ONLY_ROUTES]:
        for method in ("GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"):
            status = browser.request(path, FORMS.get(path, {}), method)[0]
            assert status in (200, 204, 405), (method, path, status)
            assert rows(engine) == before, (method, path)
        assert browser.request(path, {**FORMS.get(path, {}), "csrf_token": ""})[0] in (400, 405)
        assert rows(engine) == before, ("POST without a token", path)

    for path, form in FORMS.items():
        earlier = rows(engine)
        browser.open_form("/auth/login")  # a new token after a login or password change
        assert browser.request(path, form)[0] == 302, path
        assert rows(engine) != earlier, ("POST with a token", path)
    engine.dispose()
