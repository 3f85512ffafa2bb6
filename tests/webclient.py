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


# The password of every account that sign_up makes.
SIGN_UP_PASSWORD = "writer password"


class Browser:
    """One user of the blog over HTTP: keeps its cookies and its forms' token."""

    def __init__(self, base_url):
        self.base_url = base_url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), NoRedirect()
        )
        self.token = None

    def request(self, path, form=None, method=None):
        """GET path, or POST form with the token (or send it with another method)."""
        data = None
        if form is not None:
            data = urllib.parse.urlencode({"csrf_token": self.token, **form}).encode()
        request = urllib.request.Request(self.base_url + path, data, method=method)
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read().decode()

    def open_form(self, path) -> bool:
        """Keep the token of the form at path; False if the page has none (a 503, a redirect)."""
        token = re.search(r'name="csrf_token" value="([^"]+)"', self.request(path)[2])
        if token:
            self.token = token.group(1)
        return token is not None

    def sign_up(self, username, seconds=60, stop=None) -> bool:
        """Register (or find the name taken), log in and open the new-post form,
        starting again while a migration answers 503 or ends the session;
        False if the event stop is set first."""
        account = {"username": username, "password": SIGN_UP_PASSWORD}
        deadline = time.monotonic() + seconds
        while not (
            self.open_form("/auth/register")
            and self.request("/auth/register", account)[0] in (302, 409)
            and self.request("/auth/login", account)[0] == 302
            and self.open_form("/create")
        ):
            if stop is not None and stop.is_set():
                return False
            assert time.monotonic() < deadline, f"{username} could not sign up"
            time.sleep(0.1)
        return True
