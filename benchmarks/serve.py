"""Serve a benchmark's WSGI app with the same granian, and the same settings,
as `python run.py` serves the blog, so that only the app differs:

    python -m benchmarks.serve benchmarks.static_baseline:create_app PORT
"""

import sys

from run import DEFAULT_THREADS, DEFAULT_WORKERS, serve_wsgi

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m benchmarks.serve MODULE:FUNCTION PORT")
    factory, port = sys.argv[1:]
    serve_wsgi(factory, "127.0.0.1", int(port), DEFAULT_WORKERS, DEFAULT_THREADS)
