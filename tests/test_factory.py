"""The app factory and its settings: the secret key, the largest request, the
host names the blog answers."""

import multiprocessing
import os
import secrets
import stat
import time

import pytest

from blog import create_app, instance_secret_key
from blog.models import Post, User

from .pages import logged_in_as
from .snapshot import count_rows


def make_a_key_slowly(instance, start, keys):
    make = secrets.token_hex

    def slowly(length: int) -> str:
        time.sleep(0.5)  # as on a loaded machine or a slow disk
        return make(length)

    secrets.token_hex = slowly
    start.wait()
    keys.put(instance_secret_key(instance))


@pytest.mark.processes
def test_secret_key_file_appears_whole_to_processes_starting_together(tmp_path):
    instance = tmp_path / "instance"
    # Thirty processes with the blog imported, as a server's workers are, start at once.
    processes = multiprocessing.get_context("fork")
    start, keys = processes.Barrier(30), processes.SimpleQueue()
    starters = [
        processes.Process(target=make_a_key_slowly, args=(instance, start, keys)) for _ in range(30)
    ]
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join(60)
    assert [starter.exitcode for starter in starters] == [0] * 30
    found = {keys.get() for _ in starters}
    assert len(found) == 1 and len(found.pop()) == 64
    assert os.listdir(instance) == ["secret_key"]  # no draft left behind
    assert stat.S_IMODE((instance / "secret_key").stat().st_mode) == 0o600
    assert instance_secret_key(instance) == (instance / "secret_key").read_text()


def test_request_body_over_the_limit_is_413(app, auth):
    auth.login()
    before = count_rows(app, Post), count_rows(app, User)
    response = auth.post("/create", {"title": "big", "body": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 413
    page = response.get_data(as_text=True)
    assert "413 Request Entity Too Large" in page
    assert logged_in_as(page) == "test"
    assert (count_rows(app, Post), count_rows(app, User)) == before


def test_secret_key_comes_from_the_environment(database_url, monkeypatch):
    monkeypatch.setenv("BLOG_SECRET_KEY", "from the environment")
    app = create_app({"DATABASE_URL": database_url, "CHECK_DATABASE": False})
    assert app.config["SECRET_KEY"] == "from the environment"


def test_secret_key_is_generated_once_into_the_instance_folder(tmp_path):
    key = instance_secret_key(tmp_path / "instance")
    assert len(key) == 64
    assert instance_secret_key(tmp_path / "instance") == key
    assert (tmp_path / "instance" / "secret_key").stat().st_mode & 0o077 == 0


def test_only_the_blogs_host_names_are_answered(database_url, monkeypatch):
    monkeypatch.setenv("BLOG_HOSTS", "blog.example.org, www.blog.example.org")
    app = create_app({"DATABASE_URL": database_url, "CHECK_DATABASE": False})
    client = app.test_client()
    assert client.get("/favicon.ico", headers={"Host": "www.blog.example.org"}).status_code == 301
    refused = client.get("/favicon.ico", headers={"Host": "evil.example"})
    assert refused.status_code == 400
    assert "Host 'evil.example' is not trusted." in refused.get_data(as_text=True)


def test_the_instance_folder_is_its_owners_alone_whatever_the_umask(tmp_path):
    umask = os.umask(0)
    try:
        instance_secret_key(tmp_path / "instance")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "instance").stat().st_mode) == 0o700
