"""The blog's pages as a test reads and fills them: who is logged in, the
messages shown, form fields and their errors, and logging in through the forms."""

import html
import re
from html.parser import HTMLParser

from jinja2.bccache import Bucket, BytecodeCache
from werkzeug.security import generate_password_hash

# The test client's apps hash passwords with one round of PBKDF2, not the blog's
# scrypt: the tests log in and fail to thousands of times, and what they check
# never depends on the cost (test_auth checks that the blog itself uses scrypt).
FAST_PASSWORD_HASH_METHOD = "pbkdf2:sha256:1"


class CompiledTemplates(BytecodeCache):
    """The templates compiled once per test process, not once per app: Jinja
    compiling them anew took a third of an in-process test's time."""

    def __init__(self) -> None:
        self.compiled: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        if bucket.key in self.compiled:  # the key covers the template's source
            bucket.bytecode_from_string(self.compiled[bucket.key])

    def dump_bytecode(self, bucket: Bucket) -> None:
        self.compiled[bucket.key] = bucket.bytecode_to_string()


COMPILED_TEMPLATES = CompiledTemplates()

# What a test user types to log in, and its hash.
PASSWORD = "correct horse"
PASSWORD_HASH = generate_password_hash(PASSWORD, method=FAST_PASSWORD_HASH_METHOD)


def logged_in_as(page: str) -> str | None:
    """Whom the page's menu names as logged in; None when it offers to log in."""
    name = re.search(r'<a class="user" href="/users/[^"]*"[^>]*>([^<]*)</a>', page)
    if not name or "Log out" not in page or "Log in" in page:
        return None
    return html.unescape(name.group(1))


def flashes(page: str, role: str) -> list[str]:
    """The messages a page announces: role "alert" for errors, "status" for successes."""
    return [html.unescape(m) for m in re.findall(rf'role="{role}"[^>]*>([^<]*)<', page)]


class FormFields(HTMLParser):
    """A page's form fields by name: the value a browser fills in, and the attributes."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.attributes: dict[str, dict[str, str]] = {}
        self._textarea: str | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        fields = {name: value or "" for name, value in attrs}
        if tag == "input" and fields.get("type") not in ("hidden", "submit"):
            self.values[fields["name"]] = fields.get("value", "")
        elif tag == "textarea":
            self._textarea = fields["name"]
            self.values[self._textarea] = ""
        else:
            return
        self.attributes[fields["name"]] = fields

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self.values[self._textarea] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea":
            self._textarea = None


def form_fields(page: str) -> dict[str, str]:
    return FormFields(page).values


def field_rules(page: str, name: str) -> dict[str, str]:
    """What the browser checks and offers in a field before the form is sent."""
    attributes = FormFields(page).attributes[name]
    rules = ("required", "minlength", "maxlength", "pattern", "autocomplete")
    return {rule: attributes[rule] for rule in rules if rule in attributes}


def error_beside(page: str, name: str) -> str | None:
    """The error shown beside a form field, if the field is marked invalid and
    names it (aria-invalid, aria-describedby), as a screen reader finds it."""
    attributes = FormFields(page).attributes[name]
    if attributes.get("aria-invalid") != "true":
        return None
    for id in attributes.get("aria-describedby", "").split():
        found = re.search(rf'<p class="field-error" id="{id}">([^<]*)</p>', page)
        if found:
            return html.unescape(found.group(1))
    return None


class AuthActions:
    def __init__(self, client):
        self._client = client

    def csrf_token(self) -> str:
        """The token that the blog's forms carry for this client's session."""
        page = self._client.get("/auth/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token, "the login page has no form token"
        return token.group(1)

    def post(self, url, data=None, **kwargs):
        """Send a form the way a browser does, with the page's token."""
        return self._client.post(
            url, data={"csrf_token": self.csrf_token(), **(data or {})}, **kwargs
        )

    def login(self, username="test", password=PASSWORD):
        return self.post("/auth/login", {"username": username, "password": password})

    def logout(self):
        return self.post("/auth/logout")
