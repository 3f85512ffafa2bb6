"""The blog as people use it, in a real browser: Debian's headless Chromium,
driven by Selenium, at a phone's width and a desktop's, with and without
JavaScript, against `python run.py` on a database of the tests' own.

On every page: nothing wider than the screen, no console errors, no finding
of axe-core (WCAG 2 A and AA) or of the Nu Html Checker, and a screenshot in
screenshots/ (replaced on each run) for a person to look at. Skipped when
Chromium, its driver or the checkers are missing, except in CI, which fails.
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session

from blog.models import Post, User
from database_safety import create_engine

from .pages import PASSWORD, PASSWORD_HASH
from .project import PROJECT
from .server import free_port, serving, wait_for_page

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = PROJECT / "screenshots"
# What `make test` installs from the npm registry into the virtual environment.
PAGE_CHECKERS = Path(sys.prefix) / "page-checkers" / "node_modules"
AXE = PAGE_CHECKERS / "axe-core" / "axe.min.js"
NU_HTML_CHECKER = PAGE_CHECKERS / "vnu-jar" / "build" / "dist" / "vnu.jar"


def missing() -> str | None:
    """What the browser tests lack on this machine, if anything."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        return f"{CHROMIUM} or {CHROMEDRIVER} is missing: apt-get install chromium chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is missing: pip install -r requirements-dev.txt"
    if not (AXE.exists() and NU_HTML_CHECKER.exists()):
        return (
            f"axe-core or the Nu Html Checker is missing from {PAGE_CHECKERS}: make installs them"
        )
    if not shutil.which("java"):
        return (
            "java is missing, which the Nu Html Checker needs: apt-get install default-jre-headless"
        )
    return None


if reason := missing():
    if os.environ.get("CI"):
        pytest.fail(f"CI runs the browser tests, but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

# Selenium Manager would download a browser or a driver it cannot find: never.
os.environ["SE_OFFLINE"] = "true"

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

# A writer of the seeded posts, with the longest name the blog allows.
LONG_NAME = ("a.writer.with.a.long.name." * 4)[:80]
# A name of 20 characters, of wide letters: shown whole on every screen.
TWENTY_CHARACTERS = "Maximilian.Wentworth"
# What nobody would type, but a pasted link or a chemical name is: one word.
LONG_WORD = "Pneumonoultramicroscopicsilicovolcanoconiosis" * 4

TOPICS = [
    (
        "Keeping a blog in one file",
        "SQLite keeps every post in blog.db. There is no server to run, and a backup "
        "is a copy of one file, made while the blog keeps serving.",
    ),
    (
        "What a migration is",
        "A revision changes the schema by one step, and its downgrade takes that step "
        "back. Alembic remembers which step a database has reached.",
    ),
    (
        "Writing revisions by hand",
        "Autogenerate guesses from the models; a revision written by hand says exactly "
        "what it means, and is read by whoever reviews it.",
    ),
    (
        "Why old posts have no author",
        "Posts came before accounts. The migration gave each post an author column and "
        "left it empty for the posts already there.",
    ),
    (
        "Pages that stay fast",
        "The next page starts just below the last post shown, so the thousandth page "
        "reads as few rows as the first.",
    ),
    (
        "Going back down safely",
        "Before a downgrade drops anything, the database is copied beside itself, and "
        "one command puts the copy back.",
    ),
]


def seed(database_url: str) -> None:
    """Three writers and 25 posts: three pages of the index, both ways."""
    engine = create_engine(database_url)
    start = datetime(2024, 3, 1, 9)
    with Session(engine) as db:
        db.execute(
            insert(User),
            [
                {"username": "ada", "password_hash": PASSWORD_HASH, "created": start},
                {"username": LONG_NAME, "password_hash": PASSWORD_HASH, "created": start},
                {"username": "grace", "password_hash": PASSWORD_HASH, "created": start},
                {"username": TWENTY_CHARACTERS, "password_hash": PASSWORD_HASH, "created": start},
            ],
        )
        posts = []
        for n in range(25):
            title, body = TOPICS[n % len(TOPICS)]
            if n == 12:
                title, body = f"A long word: {LONG_WORD}", f"It goes on: {LONG_WORD}."
            posts.append(
                {
                    "title": title,
                    "body": body,
                    # ada's on every other; two pages of them.
                    "author_id": 1 if n % 2 == 0 else 2 if n % 6 == 1 else 3,
                    "created": start + timedelta(days=n),
                }
            )
        db.execute(insert(Post), posts)
        db.commit()
    engine.dispose()


@pytest.fixture(scope="module")
def blog(tmp_path_factory) -> Iterator[str]:
    """The blog served by `python run.py`, on a database in a temporary folder."""
    folder = tmp_path_factory.mktemp("browser")
    database_url = f"sqlite:///{folder / 'blog.db'}"
    env = {**os.environ, "BLOG_DATABASE_URL": database_url, "BLOG_SECRET_KEY": "browser tests"}
    init = subprocess.run(
        [sys.executable, PROJECT / "run.py", "init"], env=env, capture_output=True, text=True
    )
    assert init.returncode == 0, init.stderr
    seed(database_url)
    command = [sys.executable, PROJECT / "run.py", "--workers", "2", "--port"]
    with serving(command, folder / "server.log", env) as base_url:
        yield base_url


@pytest.fixture(scope="module", autouse=True)
def screenshots() -> None:
    """Only this run's screenshots in the folder."""
    SCREENSHOTS.mkdir(exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink(missing_ok=True)  # another test process may be clearing it too


def text_of(element: WebElement) -> str:
    """The element's text as the page holds it, shown or not."""
    return (element.get_attribute("textContent") or "").strip()


@dataclass
class Device:
    name: str
    width: int
    height: int
    mobile: bool
    javascript: bool


DEVICES = [
    Device("desktop", 1280, 800, mobile=False, javascript=True),
    Device("phone", 390, 844, mobile=True, javascript=True),
    Device("phone-nojs", 390, 844, mobile=True, javascript=False),
]


# Runs axe-core, injected into the page, on WCAG 2.0, 2.1 and 2.2 at levels A and AA.
AXE_RUN = """
const done = arguments[arguments.length - 1];
axe.run(document, {runOnly: {type: "tag", values: arguments[0]}}).then(
  results => done(results.violations.map(
    v => `${v.id}: ${v.help} (${v.nodes.map(n => n.target.join(" ")).join(", ")})`)),
  error => done([String(error)]));
"""
AXE_SOURCE = AXE.read_text() if AXE.exists() else ""
WCAG_LEVELS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


@pytest.fixture(scope="module")
def html_checker() -> Iterator[str]:
    """The Nu Html Checker as a web service on this machine: Java starts once."""
    port = free_port()
    checker = subprocess.Popen(
        ["java", "-cp", str(NU_HTML_CHECKER), "-Dnu.validator.servlet.bind-address=127.0.0.1"]
        # Half the CPU for the few hundred pages it checks: Java's quick
        # compiler only (whose deeper stack the checker needs) and one GC thread.
        + ["-XX:TieredStopAtLevel=1", "-Xss4m", "-XX:+UseSerialGC"]
        + ["nu.validator.servlet.Main", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_page(url, seconds=120)
        yield url
    finally:
        checker.terminate()
        checker.wait(30)


def html_errors(checker: str, page: str) -> list[str]:
    """What the Nu Html Checker finds wrong in the page's markup."""
    request = urllib.request.Request(
        checker + "?out=json",
        data=page.encode(),
        headers={"Content-Type": "text/html; charset=utf-8"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        messages = json.load(response)["messages"]
    return [
        f"line {m.get('lastLine')}: {m['message']} ({m.get('extract', '').strip()})"
        for m in messages
        if m["type"] != "info"
    ]


class Browser:
    """A person at one device: opens pages, clicks, types, and checks each page."""

    def __init__(self, device: Device, base_url: str, profile: str, html_checker: str) -> None:
        self.device, self.base_url, self.html_checker = device, base_url, html_checker
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--window-size={device.width},{device.height}",
        ]:
            options.add_argument(argument)
        # The performance log names each page's response, whose body the
        # Nu Html Checker reads: the markup as sent, before the browser mends it.
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        self.emulate()
        self.shots = 0

    def emulate(self) -> None:
        """The device's screen, in the current tab: a window is never narrower than
        500 px, and a phone's viewport follows the page's <meta name="viewport">.
        Without JavaScript, no page's script runs."""
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": self.device.width,
                "height": self.device.height,
                "deviceScaleFactor": 1,
                "mobile": self.device.mobile,
            },
        )
        self.scripts_run(self.device.javascript)

    def scripts_run(self, run: bool) -> None:
        self.driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": not run})

    def switch_to(self, tab: str | None = None) -> str:
        """Open a new tab, or go back to one; the tab's handle."""
        if tab is None:
            self.driver.switch_to.new_window("tab")
        else:
            self.driver.switch_to.window(tab)
        self.emulate()
        return self.driver.current_window_handle

    # Finding things on the page, as a person would by their words.

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return text_of(self.find(css))

    def heading(self) -> str:
        return self.text("main h1")

    def flashes(self, role: str) -> list[str]:
        return [text_of(e) for e in self.all(f'[role="{role}"]')]

    def logged_in_as(self) -> str | None:
        names = self.all("nav .user")
        return text_of(names[0]) if names else None

    def titles(self) -> list[str]:
        return [text_of(e) for e in self.all("article h2")]

    def has_link(self, words: str) -> bool:
        return bool(self.driver.find_elements(By.PARTIAL_LINK_TEXT, words))

    # Acting, and checking the page that comes back.

    def open(self, path: str, shot: str, status: int = 200) -> None:
        self.driver.get(self.base_url + path)
        self.check(shot, status)

    def act(self, action: Callable[[], None], shot: str, status: int = 200) -> None:
        """Do what leads to another page, wait for that page, and check it."""
        # A mark on this page's window, which the next page's window lacks. (Waiting
        # for an element of this page to go stale can meet an error mid-navigation.)
        self.driver.execute_script("window.leftBehind = true")
        action()
        WebDriverWait(
            self.driver, 10, poll_frequency=0.02, ignored_exceptions=[WebDriverException]
        ).until(
            lambda driver: driver.execute_script(
                "return !window.leftBehind && document.readyState === 'complete'"
            )
        )
        self.check(shot, status)

    def click(self, words: str, shot: str, status: int = 200) -> None:
        """Follow the link or press the button with these words."""
        target = self.driver.find_element(
            By.XPATH,
            f"//main//*[self::a or self::button][normalize-space()='{words}']"
            f" | //nav//*[self::a or self::button][normalize-space()='{words}']",
        )
        self.act(target.click, shot, status)

    def fill(self, **fields: str) -> None:
        for name, value in fields.items():
            field = self.find(f'[name="{name}"]')
            field.clear()
            field.send_keys(value)

    def submit(self, shot: str, status: int = 200) -> None:
        self.act(self.find('main form button[type="submit"]').click, shot, status)

    def value(self, name: str) -> str:
        return str(self.find(f'[name="{name}"]').get_property("value"))

    def check(self, shot: str, status: int) -> None:
        """Nothing sticks out sideways, nothing went wrong in the console; a screenshot."""
        widths = self.driver.execute_script(
            "return [document.documentElement.scrollWidth,"
            " document.documentElement.clientWidth, window.innerWidth]"
        )
        # A phone zooms out to fit a page that is too wide: its innerWidth grows
        # with the page, so the page's width is compared with the screen's too.
        assert max(widths) <= self.device.width, (
            f"{shot} at {self.device.name}: {widths[0]} px wide on a {self.device.width} px"
            f" screen, because of {self.wider_than_the_screen()}"
        )
        errors = [
            entry["message"]
            for entry in self.driver.get_log("browser")
            if entry["level"] == "SEVERE"
            # Chromium's own pages log their errors here too; they are not the blog's.
            and not entry["message"].startswith("chrome://")
            # A page answered with an error status is logged as one; expected here.
            and not (
                status != 200
                and entry["message"].startswith(self.driver.current_url + " - ")
                and f"status of {status}" in entry["message"]
            )
        ]
        assert errors == [], f"{shot} at {self.device.name}: the console has {errors}"
        # axe-core runs on a page loaded without JavaScript too, once it has loaded.
        self.scripts_run(True)
        # Through DevTools: half the browser's CPU that execute_script takes for its 650 kB.
        self.driver.execute_cdp_cmd("Runtime.evaluate", {"expression": AXE_SOURCE})
        findings = self.driver.execute_async_script(AXE_RUN, WCAG_LEVELS)
        self.scripts_run(self.device.javascript)
        assert findings == [], f"{shot} at {self.device.name}: axe-core found {findings}"
        problems = html_errors(self.html_checker, self.markup())
        assert problems == [], f"{shot} at {self.device.name}: the Nu Html Checker found {problems}"
        self.shots += 1
        self.screenshot(f"{self.device.name}-{self.shots:02d}-{shot}")

    def markup(self) -> str:
        """The page's HTML as the blog sent it."""
        events = [
            json.loads(entry["message"])["message"] for entry in self.driver.get_log("performance")
        ]
        pages = [
            event["params"]["requestId"]
            for event in events
            if event["method"] == "Network.responseReceived"
            and event["params"].get("type") == "Document"
        ]
        assert pages, "no page was loaded since the last check"
        response = self.driver.execute_cdp_cmd("Network.getResponseBody", {"requestId": pages[-1]})
        return response["body"]

    def wider_than_the_screen(self) -> list[str]:
        """The elements that reach past the screen's right edge, innermost last."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll('body *')]"
            ".filter(e => e.getBoundingClientRect().right > arguments[0])"
            ".map(e => `<${e.tagName.toLowerCase()} class=${e.className}>`"
            " + ` ${e.textContent.trim().slice(0, 30)}`)",
            self.device.width,
        )

    def screenshot(self, name: str) -> None:
        """The whole page, as long as it is (up to a limit), at the device's width."""
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": self.device.width,
                    "height": min(max(size["height"], self.device.height), 5000),
                    "scale": 1,
                },
            },
        )
        (SCREENSHOTS / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))

    def log_in(self, username: str) -> None:
        self.open("/auth/login", "login")
        self.fill(username=username, password=PASSWORD)
        self.submit("logged-in")
        assert self.logged_in_as() == username

    def log_out(self) -> None:
        self.click("Log out", "logged-out")
        assert self.logged_in_as() is None


@pytest.fixture(scope="module", params=DEVICES, ids=lambda device: device.name)
def browser(request, blog, html_checker) -> Iterator[Browser]:
    with tempfile.TemporaryDirectory() as profile:
        browser = Browser(request.param, blog, profile, html_checker)
        try:
            yield browser
        finally:
            browser.driver.quit()


def test_a_writers_whole_path(browser):
    name = f"{browser.device.name}.{LONG_NAME}"[:80]
    browser.open("/", "index")
    browser.click("Register", "register")

    # The browser checks the rules before sending anything.
    browser.fill(username="ab", password=PASSWORD)
    browser.find('main form button[type="submit"]').click()
    assert browser.all("#username:invalid") and browser.heading() == "Register"

    browser.fill(username=name, password=PASSWORD)
    browser.submit("registered")
    assert browser.flashes("status") == [f"Registered as {name}. Log in to start writing."]
    assert browser.heading() == "Log in" and browser.value("username") == name
    success_colour = browser.find('[role="status"]').value_of_css_property("background-color")
    browser.fill(password=PASSWORD)
    browser.submit("logged-in")
    assert browser.flashes("status") == [f"Logged in as {name}."]
    assert browser.logged_in_as() == name

    title = f"{browser.device.name}: {LONG_WORD}"[:200]
    browser.click("New post", "new-post")
    browser.fill(title=title, body=f"First line.\n\n{LONG_WORD} and more words.")
    browser.submit("created")
    assert browser.flashes("status") == ["Post created."]
    assert browser.heading() == title

    browser.click("Edit", "edit")
    assert browser.value("title") == title
    browser.click("Cancel", "edit-cancelled")
    assert browser.heading() == title
    browser.click("Edit", "edit")
    browser.fill(title="Edited " + title[:100])
    browser.submit("saved")
    assert browser.flashes("status") == ["Post saved."]
    assert browser.heading() == "Edited " + title[:100]

    browser.click("Edit", "edit")
    browser.click("Delete", "delete-asks")
    assert browser.heading() == f"Delete “Edited {title[:100]}”?"
    browser.click("Cancel", "delete-cancelled")
    assert browser.heading() == "Edited " + title[:100]
    browser.click("Edit", "edit")
    browser.click("Delete", "delete-asks")
    browser.click("Delete", "deleted")
    assert browser.flashes("status") == ["Post deleted."]
    assert browser.heading() == "Posts" and f"Edited {title[:100]}" not in browser.titles()

    browser.log_out()
    assert browser.flashes("status") == ["Logged out."]

    # The name is taken now: an error, which looks like one.
    browser.click("Register", "register")
    browser.fill(username=name, password=PASSWORD)
    browser.submit("name-taken", status=409)
    assert browser.flashes("alert") == [f"Username {name} is already taken."]
    assert browser.value("username") == name and browser.value("password") == ""
    error_colour = browser.find('[role="alert"]').value_of_css_property("background-color")
    assert error_colour != success_colour


@pytest.mark.parametrize("path", ["/", "/users/ada"])
def test_paging_both_ways(browser, path):
    shot = "index" if path == "/" else "user"
    browser.open(path, f"{shot}-page-1")
    pages = [browser.titles()]
    assert not browser.has_link("Newer posts")
    while browser.has_link("Older posts"):
        browser.click("Older posts →", f"{shot}-page-{len(pages) + 1}")
        assert browser.heading().startswith("Older posts")
        pages.append(browser.titles())
    assert len(pages) >= 2
    back = [pages[-1]]
    while browser.has_link("Newer posts"):
        browser.click("← Newer posts", f"{shot}-back-to-page-{len(pages) - len(back)}")
        back.append(browser.titles())
    assert back == pages[::-1]
    assert not browser.heading().startswith("Older posts")


def test_error_pages_show_who_is_logged_in(browser):
    browser.log_in("ada")
    browser.open("/post/999999", "404", status=404)
    assert browser.heading() == "404 Not Found" and browser.logged_in_as() == "ada"
    browser.open("/?before=yesterday", "404-page-cursor", status=404)
    assert "no page of posts before 'yesterday'" in browser.text("main")
    browser.open("/post/2/update", "403", status=403)  # the long-named writer's post
    assert browser.heading() == "403 Forbidden" and browser.logged_in_as() == "ada"
    browser.open("/auth/logout", "405", status=405)
    assert browser.heading() == "405 Method Not Allowed" and browser.logged_in_as() == "ada"

    # A form opened before logging in again carries an old token: 400.
    browser.open("/create", "new-post")
    form_tab = browser.driver.current_window_handle
    browser.switch_to()
    browser.open("/", "index")
    browser.log_out()
    browser.log_in("ada")
    browser.driver.close()
    browser.switch_to(form_tab)
    browser.fill(title="Sent with an old token", body="Never saved.")
    browser.submit("400", status=400)
    assert browser.heading() == "400 Bad Request" and browser.logged_in_as() == "ada"

    # A body over 1 MiB, past the field's maxlength as a script may put it: 413.
    browser.open("/create", "new-post")
    browser.fill(title="Too long")
    browser.driver.execute_script(
        "document.getElementById('body').value = 'x'.repeat(arguments[0])", 1024 * 1024 + 1
    )
    browser.submit("413", status=413)
    assert browser.heading() == "413 Request Entity Too Large"
    assert browser.logged_in_as() == "ada"
    browser.log_out()


def test_pages_a_visitor_sees(browser):
    browser.open("/users", "users")
    assert browser.logged_in_as() is None and LONG_NAME in browser.text("main")
    browser.open("/post/13", "long-word")
    assert LONG_WORD in browser.text("main")
    browser.open("/post/1", "post")
    assert " ".join(browser.text(".about").split()) == "by ada on 2024-03-01 09:00 UTC"


def test_a_name_of_twenty_characters_shows_whole_in_the_menu(browser):
    browser.log_in(TWENTY_CHARACTERS)
    name = browser.find("nav .user")
    assert browser.driver.execute_script("return arguments[0].scrollWidth", name) <= (
        browser.driver.execute_script("return arguments[0].clientWidth", name)
    ), f"{TWENTY_CHARACTERS} is cut short at {browser.device.name}"
    browser.log_out()
