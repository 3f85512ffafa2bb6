"""The headers of every response, error pages included: the security headers,
and no server version."""

import urllib.request

import pytest

from blog import create_app


def test_every_response_carries_the_security_headers(app, client, auth):
    auth.login()
    responses = [
        client.get("/"),
        client.get("/post/2"),
        client.get("/post/999"),
        client.get("/static/style.css"),
        client.post("/create", data={"title": "no token"}),
        auth.post("/auth/logout"),
    ]
    for response in responses:
        policy = response.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
        assert "default-src 'self'" in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
        # A page names who is logged in; the stylesheet may be kept.
        html = response.mimetype == "text/html"
        assert (response.headers.get("Cache-Control") == "no-store") == html, response.mimetype


@pytest.mark.parametrize("options", [[], ["--debug"]], ids=["granian", "debug"])
def test_the_server_names_no_version(serve, options):
    base_url = serve(*options)
    with urllib.request.urlopen(base_url + "/") as response:
        server = response.headers.get("Server", "")
        policy = response.headers["Content-Security-Policy"]
    assert not any(character.isdigit() for character in server)
    assert "unsafe-inline" not in policy


def test_error_pages_keep_their_headers(client):
    response = client.get("/auth/logout")
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    assert "405 Method Not Allowed" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("setting", "scheme", "sent"),
    [
        ("31536000", "https", "max-age=31536000"),
        ("31536000", "http", None),  # a browser ignores it over plain HTTP anyway
        (None, "https", None),
    ],
)
def test_hsts_over_https_when_set(database_url, app, monkeypatch, setting, scheme, sent):
    if setting is None:
        monkeypatch.delenv("BLOG_HSTS_SECONDS", raising=False)
    else:
        monkeypatch.setenv("BLOG_HSTS_SECONDS", setting)
    blog = create_app({"DATABASE_URL": database_url, "SECRET_KEY": "test"})
    blog.config["PREFERRED_URL_SCHEME"] = scheme  # the test client's requests come over it
    assert blog.test_client().get("/").headers.get("Strict-Transport-Security") == sent
