"""How much a worker of `python run.py` grows when anonymous readers ask for
one page under many different long query strings:

    python -m benchmarks.page_cache_memory

Builds a blog.db as the load benchmark does, serves it, and sends 1,200
`GET /post/<id>?i=N&pad=<65,000 characters>`, then prints each worker's RSS
before and after. The page cache keys a page on its path and cursor alone,
and keeps at most BLOG_PAGE_CACHE_BYTES: the growth must stay under 20 MiB.
"""

import sys
import tempfile
import urllib.request
from pathlib import Path

from benchmarks.load import POSTS, build_database
from tests.project import PROJECT
from tests.server import server_process

REQUESTS = 1200
PAD = 65_000
TARGET_MIB = 20


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kib / 1024


def workers_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(child) for child in children.read().split()]


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        database = work / "blog.db"
        build_database(database)
        env = {"BLOG_DATABASE_URL": f"sqlite:///{database}", "BLOG_SECRET_KEY": "benchmark"}
        command = [sys.executable, "run.py", "--port"]
        with server_process(command, work / "blog.log", env, PROJECT, forked=False) as (url, pid):
            workers = workers_of(pid)
            before = {worker: rss_mib(worker) for worker in workers}
            for n in range(REQUESTS):
                path = f"/post/{POSTS // 2}?i={n}&pad={'x' * PAD}"
                with urllib.request.urlopen(url + path, timeout=30) as response:
                    response.read()
            after = {worker: rss_mib(worker) for worker in workers}
    print(f"{REQUESTS:,} anonymous GETs of one page, each with a distinct {PAD:,}-character query")
    print("| worker | RSS before MiB | RSS after MiB | growth MiB |")
    print("|---|---|---|---|")
    growths = {worker: after[worker] - before[worker] for worker in workers}
    for n, worker in enumerate(workers, start=1):
        print(f"| {n} | {before[worker]:.1f} | {after[worker]:.1f} | {growths[worker]:.1f} |")
    growth = max(growths.values())
    verdict = "meets" if growth < TARGET_MIB else "MISSES"
    print(f"\nlargest growth of a worker: {growth:.1f} MiB ({verdict} < {TARGET_MIB})")


if __name__ == "__main__":
    main()
