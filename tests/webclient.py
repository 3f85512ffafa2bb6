"""A user of the blog over HTTP, for the tests and benchmarks that drive a real server."""

import http.cookiejar
import re
import time
import urllib.error
import urllib.parse
import urllib.request


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None


class Browser:
    """One user of the blog over HTTP: keeps its cookies and its forms' token."""

    def __init__(self, base_url):
        self.base_url = base_url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), NoRedirect()
        )
        self.token = None

    def request(self, path, form=None):
        data = None
        if form is not None:
            data = urllib.parse.urlencode({"csrf_token": self.token, **form}).encode()
        try:
            with self.opener.open(self.base_url + path, data, timeout=30) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read().decode()

    def open_form(self, path, seconds=30):
        """Keep the token of the form at path, asking again while the blog answers
        without one (a 503 while a migration runs)."""
        deadline = time.monotonic() + seconds
        while not (token := re.search(r'name="csrf_token" value="([^"]+)"', self.request(path)[2])):
            assert time.monotonic() < deadline, f"no form at {path}"
            time.sleep(0.1)
        self.token = token.group(1)

    def sign_up(self, username):
        self.open_form("/auth/register")
        self.request("/auth/register", {"username": username, "password": "writer password"})
        self.request("/auth/login", {"username": username, "password": "writer password"})
        self.open_form("/create")
