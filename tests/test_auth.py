import pytest
from alembic import command
from flask import g, session
from sqlalchemy import MetaData, Table, delete, select

from blog import create_app
from blog.auth import hash_password
from blog.db import get_db
from blog.models import LoginFailure, Post, User, UserSession, utcnow

from .pages import (
    PASSWORD,
    PASSWORD_HASH,
    AuthActions,
    error_beside,
    field_rules,
    flashes,
    form_fields,
    logged_in_as,
)
from .project import ADD_AUTHOR
from .snapshot import count_rows


def test_register(app, client, auth):
    assert client.get("/auth/register").status_code == 200
    response = auth.post("/auth/register", {"username": "alice", "password": "a good password"})
    assert response.headers["Location"] == "/auth/login?username=alice"
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert flashes(page, "status") == ["Registered as alice. Log in to start writing."]
    assert form_fields(page) == {"username": "alice", "password": ""}
    with app.app_context():
        user = get_db().scalar(select(User).where(User.username == "alice"))
        assert user is not None
        assert user.password_hash != "a good password"
        assert user.password_hash.startswith(("scrypt:", "pbkdf2:"))  # salted hashes
    assert "alice" in client.get("/users").get_data(as_text=True)


def test_the_blog_keeps_passwords_as_scrypt_hashes(app, auth):
    app.config["PASSWORD_HASH_METHOD"] = create_app(
        {"DATABASE_URL": "sqlite://", "SECRET_KEY": "test", "CHECK_DATABASE": False}
    ).config["PASSWORD_HASH_METHOD"]  # the blog's own, not the tests' faster one
    auth.post("/auth/register", {"username": "alice", "password": "a good password"})
    with app.app_context():
        stored = get_db().scalar(select(User.password_hash).where(User.username == "alice"))
    assert stored.startswith("scrypt:")
    assert auth.login("alice", "a good password").status_code == 302


def test_taken_username_gives_the_form_back(app, auth):
    count = count_rows(app, User)
    response = auth.post("/auth/register", {"username": "test", "password": PASSWORD})
    assert response.status_code == 409
    page = response.get_data(as_text=True)
    assert flashes(page, "alert") == ["Username test is already taken."]
    assert error_beside(page, "username") == "Username test is already taken."
    assert form_fields(page) == {"username": "test", "password": ""}
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
    assert any(message in error for error in flashes(response.get_data(as_text=True), "alert"))
    assert count_rows(app, User) == count


def test_register_shows_every_error_at_once_and_keeps_the_name(auth):
    response = auth.post("/auth/register", {"username": "no way!", "password": "short"})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert flashes(page, "alert") == [
        "Username may contain only letters, digits, '_', '.' and '-'.",
        "Password must be 8 to 200 characters long.",
        "Password is too easy to guess. A word by itself is easy to guess. Add a word or two.",
    ]
    assert error_beside(page, "username") == (
        "Username may contain only letters, digits, '_', '.' and '-'."
    )
    assert error_beside(page, "password") == (
        "Password must be 8 to 200 characters long. Password is too easy to guess."
        " A word by itself is easy to guess. Add a word or two."
    )
    # What was typed stays, except the password, which is never sent back.
    assert form_fields(page) == {"username": "no way!", "password": ""}


def test_register_form_states_its_rules_and_the_browser_checks_them(client):
    page = client.get("/auth/register").get_data(as_text=True)
    assert "3 to 80 characters: letters, digits, _ . and -" in page
    assert "8 to 200 characters" in page
    assert field_rules(page, "username") == {
        "required": "",
        "minlength": "3",
        "maxlength": "80",
        "pattern": r"[A-Za-z0-9_.\-]+",
        "autocomplete": "username",
    }
    assert field_rules(page, "password") == {
        "required": "",
        "minlength": "8",
        "maxlength": "200",
        "autocomplete": "new-password",
    }


def test_login_form_asks_for_the_saved_password(client):
    page = client.get("/auth/login").get_data(as_text=True)
    assert field_rules(page, "username") == {
        "required": "",
        "maxlength": "80",
        "autocomplete": "username",
    }
    assert field_rules(page, "password") == {
        "required": "",
        "maxlength": "200",
        "autocomplete": "current-password",
    }


def test_login(app, client, auth):
    assert client.get("/auth/login").status_code == 200
    response = auth.login()
    assert response.headers["Location"] == "/"
    assert flashes(client.get("/").get_data(as_text=True), "status") == ["Logged in as test."]
    with client:
        client.get("/")
        assert g.user.username == "test"
    assert count_rows(app, UserSession) == 1


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
    page = response.get_data(as_text=True)
    assert flashes(page, "alert") == ["Incorrect username or password."]
    assert form_fields(page) == {"username": username, "password": ""}
    with client.session_transaction() as sess:
        assert "token" not in sess


def test_logout(app, client, auth):
    auth.login()
    with client:
        auth.logout()
        assert "token" not in session
    assert count_rows(app, UserSession) == 0
    assert flashes(client.get("/").get_data(as_text=True), "status") == ["Logged out."]


def test_logout_is_not_a_get(client, auth):
    auth.login()
    assert client.get("/auth/logout").status_code == 405


def test_usernames_are_unique_whatever_their_case(app, client, auth):
    response = auth.post("/auth/register", {"username": "TEST", "password": "another password"})
    assert response.status_code == 409
    assert flashes(response.get_data(as_text=True), "alert") == ["Username TEST is already taken."]
    assert count_rows(app, User) == 2

    auth.login("TEST", PASSWORD)
    with client:
        client.get("/")
        assert g.user.username == "test"


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("alice", "alice", "Password must be 8 to 200 characters long."),
        ("alice123", "alice123", "Password must not contain the username."),
        ("alice", "my name is ALICE", "Password must not contain the username."),
        *(
            ("alice", common, "Password is too easy to guess.")
            # Common passwords that the rules before zxcvbn let through.
            for common in ("Password1!", "qwerty1234", "iloveyou2", "Summer2024", "P@ssword1")
        ),
    ],
)
def test_register_refuses_weak_passwords(app, auth, username, password, message):
    response = auth.post("/auth/register", {"username": username, "password": password})
    assert response.status_code == 400
    assert any(
        alert.startswith(message) for alert in flashes(response.get_data(as_text=True), "alert")
    )
    assert count_rows(app, User) == 2


def test_the_forms_state_the_password_rules(client, auth):
    rules = "not containing the username, and hard to guess"
    assert rules in client.get("/auth/register").get_data(as_text=True)
    auth.login()
    assert rules in client.get("/auth/password").get_data(as_text=True)


def test_login_ignores_the_case_of_the_name(client, auth):
    assert auth.login("TeSt").status_code == 302
    assert logged_in_as(client.get("/").get_data(as_text=True)) == "test"


@pytest.mark.parametrize(
    ("current", "new", "status", "field", "message"),
    [
        (
            "wrong password",
            "a brand new secret",
            401,
            "current_password",
            "The current password is not right.",
        ),
        (PASSWORD, "test1234", 400, "new_password", "Password must not contain the username."),
        (PASSWORD, "short", 400, "new_password", "Password must be 8 to 200 characters long."),
    ],
)
def test_change_password_refuses(app, client, auth, current, new, status, field, message):
    auth.login()
    response = auth.post("/auth/password", {"current_password": current, "new_password": new})
    assert response.status_code == status
    page = response.get_data(as_text=True)
    assert message in flashes(page, "alert")
    assert message in error_beside(page, field)
    auth.logout()
    assert auth.login().status_code == 302  # the old password still works


def test_a_password_change_for_an_account_deleted_meanwhile_changes_nothing(
    app, client, auth, monkeypatch
):
    auth.login()

    def delete_the_account_by_hand(password):
        with app.app_context():  # another connection, as the database's owner would
            db = get_db()
            user_id = db.scalar(select(User.id).where(User.username == "test"))
            db.execute(delete(Post).where(Post.author_id == user_id))
            db.execute(delete(User).where(User.id == user_id))
            db.commit()
        return hash_password(password)

    monkeypatch.setattr("blog.auth.hash_password", delete_the_account_by_hand)
    response = auth.post(
        "/auth/password", {"current_password": PASSWORD, "new_password": "a brand new secret"}
    )
    assert response.status_code == 404
    page = response.get_data(as_text=True)
    assert "no longer exists" in page and "Password changed" not in page


def test_change_password_needs_a_login(client):
    response = client.get("/auth/password")
    assert response.headers["Location"] == "/auth/login"


def test_an_unknown_name_costs_a_password_check(client, auth, monkeypatch):
    checked = []

    def check(password_hash, password):
        checked.append(password)
        return False

    monkeypatch.setattr("blog.auth.check_password_hash", check)
    assert auth.login("nobody", "some password").status_code == 401
    assert auth.login("test", "other password").status_code == 401
    assert checked == ["some password", "other password"]


def test_users_made_before_the_upgrade_still_log_in(alembic_cfg, legacy_db, database_url):
    command.upgrade(alembic_cfg, ADD_AUTHOR)
    user = Table("user", MetaData(), autoload_with=legacy_db)
    with legacy_db.begin() as connection:
        connection.execute(
            user.insert(),
            {"username": "Early.Bird", "password_hash": PASSWORD_HASH, "created": utcnow()},
        )
    command.upgrade(alembic_cfg, "head")
    blog = create_app({"DATABASE_URL": database_url, "SECRET_KEY": "test"})
    assert AuthActions(blog.test_client()).login("early.bird", PASSWORD).status_code == 302


@pytest.mark.parametrize("username", ["x" * 500, "nul\x00name", "a b"])
def test_login_with_a_name_nobody_can_have_is_a_plain_failure(app, auth, username):
    response = auth.login(username, "some password")
    assert response.status_code == 401
    assert flashes(response.get_data(as_text=True), "alert") == ["Incorrect username or password."]
    assert count_rows(app, LoginFailure) == 1


def test_a_taken_name_is_refused_before_any_password_is_hashed(app, auth, monkeypatch):
    def no_hashing(password):
        raise AssertionError("a password was hashed for a taken name")

    monkeypatch.setattr("blog.auth.generate_password_hash", no_hashing)
    response = auth.post("/auth/register", {"username": "TEST", "password": "a fine password"})
    assert response.status_code == 409
    assert "Username TEST is already taken." in flashes(response.get_data(as_text=True), "alert")
