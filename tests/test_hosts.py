"""A Host the blog cannot use gets a plain 400, and no redirect names the host a
request gave."""

import socket

import pytest

from blog import create_app

UNUSABLE_HOSTS = [
    "a." * 127 + "b",  # 255 characters
    "a..b",
    "x" * 64 + ".example",
    "a b",
    "[::1",
    "blog.example:99999",
    ".",
    "-a.b",
]


@pytest.mark.parametrize("host", UNUSABLE_HOSTS)
@pytest.mark.parametrize("path", ["/", "/post/1", "/post//1", "/auth/login", "/nowhere"])
def test_a_host_the_blog_cannot_use_gets_a_plain_400(client, host, path):
    response = client.get(path, headers={"Host": host})
    assert response.status_code == 400
    assert "Host header" in response.get_data(as_text=True)
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("host", ["blog.example", "127.0.0.1:5000", "[::1]:5000", "localhost"])
def test_a_usable_host_gets_the_page(client, host):
    assert client.get("/", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/post//2", "/post/2"),
        ("/users/TEST", "/users/test"),
        ("/favicon.ico", "/static/favicon.svg"),
    ],
)
def test_no_redirect_names_the_requests_host(client, path, location):
    response = client.get(path, headers={"Host": "evil.example"})
    assert response.status_code in (301, 308)
    assert response.headers["Location"] == location


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ("settings", "host"),
    [
        ({}, "a..b"),
        ({"BLOG_HOSTS": "blog.example,127.0.0.1"}, "a..b"),
        ({"BLOG_HOSTS": "blog.example,127.0.0.1"}, "evil.example"),
    ],
    ids=["malformed", "malformed with BLOG_HOSTS", "not in BLOG_HOSTS"],
)
def test_a_real_server_answers_a_host_it_cannot_use_with_400_and_one_log_line(
    serve, project, settings, host
):
    base_url = serve(**settings)
    address, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((address, int(port)), timeout=5) as connection:
        request = f"GET /post/1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        connection.sendall(request.encode())
        answer = connection.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 400")
    log = (project / "server.log").read_text()
    assert "Traceback" not in log
    assert sum(host in line for line in log.splitlines()) == 1


@pytest.mark.sqlite_only  # the page cache is SQLite's
def test_a_host_outside_blog_hosts_never_gets_a_kept_page(app, database_url, monkeypatch):
    monkeypatch.setenv("BLOG_HOSTS", "blog.example")  # the app fixture made the blog
    client = create_app({"DATABASE_URL": database_url, "SECRET_KEY": "test"}).test_client()
    assert client.get("/post/2", headers={"Host": "blog.example"}).status_code == 200  # kept
    assert client.get("/post/2", headers={"Host": "evil.example"}).status_code == 400
