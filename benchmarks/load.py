"""The blog under load: `python run.py` on a real socket, driven by wrk.

    python -m benchmarks.load [--seconds 5] [--repeat 3] [--json FILE] [--flaskr DIR]

Needs wrk (Debian: `apt-get install wrk`). Builds a blog.db of 10,000 posts
by 10 users, serves it as `python run.py` does, and measures, with wrk's
keep-alive clients:

- `/`, `/post/<id>` and `/users/<name>` at 1, 4, 16 and 64 clients, and `/`
  logged in, and `/` asked for gzipped (the cost of compressing);
- the same index served by benchmarks/flaskr_baseline.py (a Flask view on raw
  sqlite3, as flaskr does it) and its bytes by benchmarks/static_baseline.py (a
  WSGI app that only returns them), under the same granian, in the same rounds;
- writers at 1 and 8 clients, each getting the new-post form and posting it;
- with --flaskr, the Flask tutorial's flaskr itself (benchmarks/flaskr_app.py)
  in the same rounds: its `/` with 10 posts, and its writers;
- readers of `/` beside 2 writers posting as fast as they can;
- readers while another process holds a large write transaction on blog.db;
- readers beside 4 users logging in over and over;
- readers beside 4 clients sending logins with a wrong form token (400), and
  beside 4 sending logins the throttle refuses (429): the refused ones must
  cost the readers little more.
"""

import argparse
import contextlib
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from werkzeug.security import generate_password_hash

from benchmarks.flaskr_app import build_database as build_flaskr_database
from blog import create_app
from blog.maintenance import init_db, migration_scripts
from blog.throttle import MAX_FAILURES_PER_ADDRESS
from run import DEFAULT_THREADS, DEFAULT_WORKERS
from tests.project import PROJECT
from tests.server import serving
from tests.webclient import Browser

POSTS = 10_000
USERS = 10
FLASKR_USER = "flaskr"
PASSWORD = "load password"
CLIENTS = (1, 4, 16, 64)
WRITERS = (1, 8)
WRITER_ROUNDS = 3  # writers' rounds for each round of pages
# Serves a baseline's WSGI app (module:function), given the port last.
SERVE = [sys.executable, "-m", "benchmarks.serve"]
BUSY_CLIENTS = 4  # readers in the scenarios with writers, a write lock, logins

# wrk prints its own summary; this adds one line of JSON that is easy to read back.
WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "failed": %d, "not ok": %d, '
    .. '"p50 ms": %.3f, "p99 ms": %.3f, "max ms": %.3f}\\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
"""

ANONYMOUS_PAGES = ("/", "/post/<id>", "/users/<name>")


def clients_named(clients: int) -> str:
    return f"{clients} client{'s' * (clients != 1)}"


TARGETS = [
    # (what, how it is worked out, at least or at most, the target); those
    # against flaskr only with --flaskr
    *(
        (f"slowest anonymous page / flaskr /, {clients_named(clients)}", ">=", 1.0)
        for clients in CLIENTS
    ),
    ("index logged in / flaskr /, 16 clients", ">=", 0.8),
    *((f"posts/s, blog / flaskr, {clients_named(clients)}", ">=", 1.0) for clients in WRITERS),
    *(
        (f"slowest anonymous page / static page, {clients_named(clients)}", ">=", 0.5)
        for clients in CLIENTS
    ),
    *((f"index / baseline, {clients_named(clients)}", ">=", 1.0) for clients in CLIENTS),
    ("index logged in / baseline, 16 clients", ">=", 0.8),
    *((f"index gzipped / index, {clients_named(clients)}", ">=", 0.95) for clients in CLIENTS),
    ("index p99 at 16 clients / queueing ideal (16 / req/s)", "<=", 3.0),
    ("readers beside 2 writers / readers alone", ">=", 0.7),
    ("readers during a long write: failed requests", "<=", 0),
    ("readers during a long write: p99 / idle p99", "<=", 5.0),
    ("readers beside refused logins / beside bad-token requests", ">=", 0.7),
    ("responses of 500 or more, anywhere", "<=", 0),
]


def build_database(path: Path) -> None:
    """A blog.db made by `run.py init`, with USERS users sharing POSTS posts."""
    app = create_app(
        {"DATABASE_URL": f"sqlite:///{path}", "SECRET_KEY": "benchmark", "CHECK_DATABASE": False}
    )
    init_db(app.extensions["db_engine"], migration_scripts(app))
    app.extensions["db_engine"].dispose()
    password_hash = generate_password_hash(PASSWORD)
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.executemany(
            "INSERT INTO user (id, username, password_hash, created) "
            "VALUES (?, ?, ?, '2024-01-01 00:00:00')",
            [(n, f"user{n}", password_hash) for n in range(1, USERS + 1)],
        )
        connection.executemany(
            "INSERT INTO post (title, body, created, author_id) "
            "VALUES (?, ?, '2024-01-01 12:00:00', ?)",
            ((f"Post number {n}", f"Body of post {n}. " * 20, n % USERS + 1) for n in range(POSTS)),
        )


def wrk(url: str, clients: int, seconds: int, report: Path, *headers: str) -> dict:
    """wrk's figures for url; each of headers ("Name: value") sent with every request."""
    options = [option for header in headers for option in ("-H", header)]
    result = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--timeout", "10s", "-s", str(report)]
        + [*options, url],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["req/s"] = figures["requests"] / figures["seconds"]
    return figures


def median_of(runs: list[dict]) -> dict:
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


class Users:
    """Users of the blog looping over what they do, each on a thread of its own,
    counting their requests' answers and latencies."""

    def __init__(self, base_url: str, count: int, action):
        self.base_url, self.action = base_url, action
        self.stop = threading.Event()
        self.statuses: list[int] = []
        self.latencies: list[float] = []
        self.threads = [threading.Thread(target=self.loop, args=(n,)) for n in range(count)]

    def loop(self, n: int) -> None:
        browser = Browser(self.base_url)
        step = self.action(browser, n + 1)
        while not self.stop.is_set():
            start = time.perf_counter()
            status = step()
            self.latencies.append((time.perf_counter() - start) * 1000)
            self.statuses.append(status)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        time.sleep(0.5)  # all at work before the readers are measured
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def summary(self, seconds: float) -> dict:
        latencies = sorted(self.latencies) or [0.0]
        return {
            "requests/s": len(self.statuses) / seconds,
            "p99 ms": latencies[int(0.99 * (len(latencies) - 1))],
            "500s": sum(status >= 500 for status in self.statuses),
            "statuses": sorted(set(self.statuses)),
        }


def writer(browser: Browser, n: int):
    browser.sign_up(f"writer{n}")
    return lambda: browser.request("/create", {"title": f"by writer{n}", "body": "text"})[0]


def poster(sign_in):
    """A writer as a person is one: each post gets the form, then sends it."""

    def action(browser: Browser, n: int):
        sign_in(browser, n)

        def step():
            browser.open_form("/create")
            return browser.request("/create", {"title": f"by writer{n}", "body": "text"})[0]

        return step

    return action


def blog_sign_in(browser: Browser, n: int) -> None:
    # An account of build_database's: registering anew each round would meet
    # the limit on registrations from one address.
    browser.open_form("/auth/login")
    account = {"username": f"user{n}", "password": PASSWORD}
    assert browser.request("/auth/login", account)[0] == 302


def flaskr_sign_in(browser: Browser, n: int) -> None:
    account = {"username": FLASKR_USER, "password": PASSWORD}
    assert browser.request("/auth/login", account)[0] == 302


def posts_per_second(
    base_url: str, clients: int, sign_in, seconds: int, every_post_stored: bool = True
) -> dict:
    with Users(base_url, clients, poster(sign_in)) as users:
        time.sleep(seconds)
    summary = users.summary(seconds)
    if every_post_stored:  # the blog's: each post stored, then shown
        assert summary["statuses"] == [302], summary
    # Others' failures are counted, not fatal: flaskr's database once answered
    # "disk I/O error" to 2 posts of 8 writers, which must not end the run.
    stored = users.statuses.count(302)
    return {
        "posts/s": stored / seconds,
        "p99 ms": summary["p99 ms"],
        "not stored": len(users.statuses) - stored,
    }


def login(browser: Browser, n: int):
    def step():
        browser.open_form("/auth/login")
        return browser.request("/auth/login", {"username": f"user{n}", "password": PASSWORD})[0]

    return step


def refused_login(browser: Browser, n: int):
    """A guesser once the address has met the throttle's limit: every try is refused (429)."""
    browser.open_form("/auth/login")

    def step():
        return browser.request("/auth/login", {"username": f"user{n}", "password": "a guess"})[0]

    return step


def reach_the_limit(base_url: str) -> None:
    """Fail logins from this address until the throttle refuses the next one."""
    guesser = Browser(base_url)
    guesser.open_form("/auth/login")
    for _ in range(MAX_FAILURES_PER_ADDRESS + 1):
        if guesser.request("/auth/login", {"username": "nobody", "password": "a guess"})[0] == 429:
            return
    raise AssertionError("the throttle never refused a login")


def bad_token_login(browser: Browser, n: int):
    """A login with a form token that is not the session's: refused (400) before any read."""
    browser.token = "not the token"
    return lambda: browser.request("/auth/login", {"username": f"user{n}", "password": "a guess"})[
        0
    ]


def hold_write_lock(database: Path, seconds: float) -> None:
    """As a migration does: one transaction that writes 200,000 posts into
    blog.db and holds its lock for SECONDS, then rolls back, leaving the
    database as it was."""
    deadline = time.monotonic() + seconds
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    print("holding", flush=True)
    for _ in range(200_000 // POSTS):
        connection.execute(
            "INSERT INTO post (title, body, created) SELECT title, body, created FROM post LIMIT ?",
            (POSTS,),
        )
    time.sleep(max(0.0, deadline - time.monotonic()))
    connection.execute("ROLLBACK")


@contextlib.contextmanager
def write_lock_held(database: Path, seconds: float):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.load",
            "--hold-write-lock",
            database,
            "--seconds",
            str(seconds),
        ],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout and process.stdout.readline().strip() == "holding"
    try:
        yield
    finally:
        process.wait(seconds + 30)


def measure(database: Path, seconds: int, repeat: int, work: Path, flaskr: Path | None) -> dict:
    report = work / "report.lua"
    report.write_text(WRK_REPORT)
    env = {
        "BLOG_DATABASE_URL": f"sqlite:///{database}",
        "BASELINE_DATABASE": str(database),
        "BLOG_SECRET_KEY": "benchmark",
    }
    post_id = POSTS // 2
    pages = {"/": "/", "/post/<id>": f"/post/{post_id}", "/users/<name>": "/users/user1"}
    results = {}
    baseline_command = [*SERVE, "benchmarks.flaskr_baseline:create_app"]
    # Every server started as a user starts it (forked=False): the figures are theirs.
    with contextlib.ExitStack() as servers:
        blog = servers.enter_context(
            serving(
                [sys.executable, "run.py", "--port"], work / "blog.log", env, PROJECT, forked=False
            )
        )
        baseline = servers.enter_context(
            serving(baseline_command, work / "baseline.log", env, PROJECT, forked=False)
        )
        (work / "index.html").write_bytes(urllib.request.urlopen(blog + "/").read())
        static_env = {"STATIC_PAGE": str(work / "index.html")}
        static_command = [*SERVE, "benchmarks.static_baseline:create_app"]
        static = servers.enter_context(
            serving(static_command, work / "static.log", static_env, PROJECT, forked=False)
        )
        others = {"baseline": baseline, "static": static}
        if flaskr:
            flaskr_database = work / "flaskr.sqlite"
            build_flaskr_database(flaskr, flaskr_database, FLASKR_USER, PASSWORD)
            flaskr_env = {"FLASKR_DIR": str(flaskr), "FLASKR_DATABASE": str(flaskr_database)}
            flaskr_command = [*SERVE, "benchmarks.flaskr_app:create_app"]
            others["flaskr"] = flaskr_url = servers.enter_context(
                serving(flaskr_command, work / "flaskr.log", flaskr_env, PROJECT, forked=False)
            )
        logged_in = Browser(blog)
        logged_in.open_form("/auth/login")
        assert (
            logged_in.request("/auth/login", {"username": "user1", "password": PASSWORD})[0] == 302
        )
        logged_in.request("/")  # shows "Logged in as user1." once, as a browser would
        cookie = "; ".join(f"{c.name}={c.value}" for c in logged_in.cookies)
        rounds = []
        for round_ in range(repeat):
            print(f"pages, round {round_ + 1} of {repeat}...", file=sys.stderr, flush=True)
            figures = {}
            for clients in CLIENTS:
                for name, path in pages.items():
                    figures[f"blog {name}, {clients}"] = wrk(blog + path, clients, seconds, report)
                figures[f"blog / logged in, {clients}"] = wrk(
                    blog + "/", clients, seconds, report, f"Cookie: {cookie}"
                )
                figures[f"blog / gzipped, {clients}"] = wrk(
                    blog + "/", clients, seconds, report, "Accept-Encoding: gzip"
                )
                for other, url in others.items():
                    figures[f"{other} /, {clients}"] = wrk(url + "/", clients, seconds, report)
            rounds.append(figures)
        # After every page round: flaskr's index shows every post it has.
        # Writers swing more than pages from one round to the next (a third,
        # seen at 1 client): more rounds, interleaved, for a steadier median.
        writer_rounds = []
        for round_ in range(WRITER_ROUNDS * repeat):
            print(
                f"writers, round {round_ + 1} of {WRITER_ROUNDS * repeat}...",
                file=sys.stderr,
                flush=True,
            )
            figures = {}
            for clients in WRITERS:
                figures[f"blog writers, {clients}"] = posts_per_second(
                    blog, clients, blog_sign_in, seconds
                )
                if flaskr:
                    figures[f"flaskr writers, {clients}"] = posts_per_second(
                        flaskr_url, clients, flaskr_sign_in, seconds, every_post_stored=False
                    )
            writer_rounds.append(figures)
        results["pages"] = {
            key: median_of([figures[key] for figures in measured])
            for measured in (rounds, writer_rounds)
            for key in measured[0]
        }
        for key in writer_rounds[0]:  # every failed post is reported, not a median
            results["pages"][key]["not stored"] = sum(
                figures[key]["not stored"] for figures in writer_rounds
            )

        print("readers beside writers, a write lock, logins...", file=sys.stderr, flush=True)
        busy = {}
        busy["readers alone"] = wrk(blog + "/", BUSY_CLIENTS, seconds, report)
        with Users(blog, 2, writer) as writers:
            busy["readers beside 2 writers"] = wrk(blog + "/", BUSY_CLIENTS, seconds, report)
        busy["2 writers"] = writers.summary(seconds)
        with write_lock_held(database, seconds + 2):
            busy["readers during a long write"] = wrk(blog + "/", BUSY_CLIENTS, seconds, report)
        with Users(blog, 4, login) as logins:
            busy["readers beside 4 logging in"] = wrk(blog + "/", BUSY_CLIENTS, seconds, report)
        busy["4 logging in"] = logins.summary(seconds)
        for name, action in (
            ("bad-token requests", bad_token_login),
            ("refused logins", refused_login),
        ):
            if action is refused_login:
                # Last: these guesses hold the address at the throttle's limit for 15 minutes.
                reach_the_limit(blog)
            with Users(blog, 4, action) as flood:
                busy[f"readers beside {name}"] = wrk(blog + "/", BUSY_CLIENTS, seconds, report)
            busy[f"4 sending {name}"] = flood.summary(seconds)
        results["busy"] = busy
    return results


def ratios(results: dict) -> dict:
    pages, busy = results["pages"], results["busy"]
    index16 = pages["blog /, 16"]
    readers = [figures for name, figures in busy.items() if name.startswith("readers")]

    def rate(key: str) -> float:
        return pages[key]["req/s"]

    def slowest_anonymous(clients: int) -> float:
        return min(rate(f"blog {name}, {clients}") for name in ANONYMOUS_PAGES)

    found = {}
    if "flaskr /, 1" in pages:
        for clients in CLIENTS:
            found[f"slowest anonymous page / flaskr /, {clients_named(clients)}"] = (
                slowest_anonymous(clients) / rate(f"flaskr /, {clients}")
            )
        found["index logged in / flaskr /, 16 clients"] = rate("blog / logged in, 16") / rate(
            "flaskr /, 16"
        )
        for clients in WRITERS:
            found[f"posts/s, blog / flaskr, {clients_named(clients)}"] = (
                pages[f"blog writers, {clients}"]["posts/s"]
                / pages[f"flaskr writers, {clients}"]["posts/s"]
            )
    for clients in CLIENTS:
        found[f"slowest anonymous page / static page, {clients_named(clients)}"] = (
            slowest_anonymous(clients) / rate(f"static /, {clients}")
        )
    for clients in CLIENTS:
        found[f"index / baseline, {clients_named(clients)}"] = rate(f"blog /, {clients}") / rate(
            f"baseline /, {clients}"
        )
    for clients in CLIENTS:
        found[f"index gzipped / index, {clients_named(clients)}"] = rate(
            f"blog / gzipped, {clients}"
        ) / rate(f"blog /, {clients}")
    long_write = busy["readers during a long write"]
    return {
        **found,
        "index logged in / baseline, 16 clients": rate("blog / logged in, 16")
        / rate("baseline /, 16"),
        "index p99 at 16 clients / queueing ideal (16 / req/s)": index16["p99 ms"]
        / (16 / index16["req/s"] * 1000),
        "readers beside 2 writers / readers alone": busy["readers beside 2 writers"]["req/s"]
        / busy["readers alone"]["req/s"],
        "readers during a long write: failed requests": long_write["failed"] + long_write["not ok"],
        "readers during a long write: p99 / idle p99": long_write["p99 ms"]
        / busy["readers alone"]["p99 ms"],
        "readers beside refused logins / beside bad-token requests": busy[
            "readers beside refused logins"
        ]["req/s"]
        / busy["readers beside bad-token requests"]["req/s"],
        # wrk counts every status of 400 or more; no reader expects one.
        "responses of 500 or more, anywhere": sum(
            figures.get("not ok", 0) for figures in [*pages.values(), *readers]
        )
        + sum(figures["500s"] for name, figures in busy.items() if not name.startswith("readers")),
    }


def print_tables(results: dict, found: dict) -> None:
    pages = results["pages"]
    others = [other for other in ("flaskr", "baseline", "static") if f"{other} /, 1" in pages]
    print(
        "| page | clients | blog req/s | p50 ms | p99 ms | "
        + " | ".join(f"{other} `/` req/s" for other in others)
        + " |"
    )
    print("|---" * (5 + len(others)) + "|")
    for clients in CLIENTS:
        for name in ("/", "/ gzipped", "/ logged in", "/post/<id>", "/users/<name>"):
            blog = pages[f"blog {name}, {clients}"]
            print(
                f"| `{name}` | {clients} | {blog['req/s']:,.0f} | {blog['p50 ms']:.1f} | "
                f"{blog['p99 ms']:.1f} | "
                + " | ".join(
                    f"{pages[f'{other} /, {clients}']['req/s']:,.0f}" if name == "/" else ""
                    for other in others
                )
                + " |"
            )
    print("\n| writers (get the form, post it) | blog posts/s | p99 ms | flaskr posts/s | p99 ms |")
    print("|---|---|---|---|---|")
    for clients in WRITERS:
        blog = pages[f"blog writers, {clients}"]
        flaskr = pages.get(f"flaskr writers, {clients}")
        print(
            f"| {clients} | {blog['posts/s']:,.1f} | {blog['p99 ms']:.0f} | "
            + (f"{flaskr['posts/s']:,.1f} | {flaskr['p99 ms']:.0f} |" if flaskr else " | |")
        )
    for name, figures in pages.items():
        if "writers" in name and figures["not stored"]:
            print(f"({name} clients: {figures['not stored']:g} posts not stored, in all rounds)")
    print(f"\n| `/` at {BUSY_CLIENTS} clients | req/s | p99 ms | max ms | failed |")
    print("|---|---|---|---|---|")
    for name, figures in results["busy"].items():
        if name.startswith("readers"):
            print(
                f"| {name} | {figures['req/s']:,.0f} | {figures['p99 ms']:.1f} | "
                f"{figures['max ms']:.1f} | {figures['failed'] + figures['not ok']} |"
            )
    for name, figures in results["busy"].items():
        if name.startswith("readers"):
            continue
        print(
            f"| ({name}: {figures['requests/s']:,.1f} requests/s, p99 "
            f"{figures['p99 ms']:.0f} ms, statuses {figures['statuses']}) | | | | |"
        )
    print()
    if "flaskr" not in others:
        print("(flaskr not measured: --flaskr DIR names the examples/tutorial folder of a")
        print(" checkout of pallets/flask)")
    for name, sense, target in TARGETS:
        if name not in found:
            continue
        value = found[name]
        meets = value >= target if sense == ">=" else value <= target
        print(f"{name:<55} {value:6.2f}  ({'meets' if meets else 'MISSES'} {sense} {target})")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--seconds", type=int, default=5, help="length of each point (default: %(default)s)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help=f"rounds of the pages, {WRITER_ROUNDS}x as many of writers (default: %(default)s)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-load-results.json"),
        help="where to write the figures (default: %(default)s)",
    )
    parser.add_argument(
        "--flaskr",
        type=Path,
        help="the examples/tutorial folder of a checkout of pallets/flask, to measure flaskr too",
    )
    parser.add_argument("--hold-write-lock", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hold_write_lock:
        hold_write_lock(args.hold_write_lock, args.seconds)
        return

    with tempfile.TemporaryDirectory() as work:
        database = Path(work) / "blog.db"
        print(f"building a blog.db of {POSTS:,} posts...", file=sys.stderr, flush=True)
        build_database(database)
        results = measure(database, args.seconds, args.repeat, Path(work), args.flaskr)
    found = ratios(results)
    machine = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )
    print(
        f"\ngranian, {DEFAULT_WORKERS} workers x {DEFAULT_THREADS} threads; wrk, "
        f"{args.seconds} s a point, the median of {args.repeat} rounds "
        f"({WRITER_ROUNDS * args.repeat} for writers); {machine}\n"
    )
    print_tables(results, found)
    args.json.write_text(
        json.dumps({"machine": machine, "results": results, "ratios": found}, indent=2) + "\n"
    )
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
