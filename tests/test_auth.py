import pytest
from flask import g, session
from sqlalchemy import select

from blog.db import get_db
from blog.models import User

from .conftest import PASSWORD, count_rows


def test_register(app, client, auth):
    assert client.get("/auth/register").status_code == 200
    response = auth.post("/auth/register", {"username": "alice", "password": "a good password"})
    assert response.headers["Location"] == "/auth/login"
    with app.app_context():
        user = get_db().scalar(select(User).where(User.username == "alice"))
        assert user is not None
        assert user.password_hash != "a good password"
        assert user.password_hash.startswith(("scrypt:", "pbkdf2:"))  # salted hashes
    assert "alice" in client.get("/users").get_data(as_text=True)


def test_taken_username_gives_the_form_back(app, auth):
    count = count_rows(app, User)
    response = auth.post("/auth/register", {"username": "test", "password": PASSWORD})
    assert response.status_code == 409
    assert "Username test is already taken." in response.get_data(as_text=True)
    assert count_rows(app, User) == count


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("", "a good password", "Username must be 3 to 80 characters long."),
        ("ab", "a good password", "Username must be 3 to 80 characters long."),
        ("a" * 81, "a good password", "Username must be 3 to 80 characters long."),
        ("bad name", "a good password", "Username may contain only letters"),
        ("<script>", "a good password", "Username may contain only letters"),
        ("alice", "", "Password must be 8 to 200 characters long."),
        ("alice", "short", "Password must be 8 to 200 characters long."),
        ("alice", "p" * 201, "Password must be 8 to 200 characters long."),
    ],
)
def test_register_validation(app, auth, username, password, message):
    count = count_rows(app, User)
    response = auth.post("/auth/register", {"username": username, "password": password})
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert count_rows(app, User) == count


def test_login(client, auth):
    assert client.get("/auth/login").status_code == 200
    response = auth.login()
    assert response.headers["Location"] == "/"
    with client:
        client.get("/")
        assert session["user_id"] == 1
        assert g.user.username == "test"


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("nobody", PASSWORD),
        ("test", "wrong password"),
    ],
)
def test_login_rejects_bad_credentials(client, auth, username, password):
    response = auth.login(username, password)
    assert response.status_code == 401
    assert "Incorrect username or password." in response.get_data(as_text=True)
    with client.session_transaction() as sess:
        assert "user_id" not in sess


def test_logout(client, auth):
    auth.login()
    with client:
        auth.logout()
        assert "user_id" not in session


def test_logout_is_not_a_get(client, auth):
    auth.login()
    assert client.get("/auth/logout").status_code == 405


def test_usernames_compare_the_way_the_unique_constraint_does(app, client, auth, backend):
    # MariaDB's default collation ignores case; SQLite and PostgreSQL do not.
    ignores_case = backend == "mysql"
    response = auth.post("/auth/register", {"username": "TEST", "password": "another password"})
    assert response.status_code == (409 if ignores_case else 302)
    assert count_rows(app, User) == (2 if ignores_case else 3)

    auth.login("TEST", PASSWORD)
    with client.session_transaction() as sess:
        assert sess.get("user_id") == (1 if ignores_case else None)
