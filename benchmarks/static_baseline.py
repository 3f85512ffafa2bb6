"""The load benchmark's ceiling: the same bytes as the blog's index, from a WSGI
app that does nothing else, served by the same granian with the same settings:

    STATIC_PAGE=index.html python -m benchmarks.serve benchmarks.static_baseline:create_app PORT
"""

import os
from pathlib import Path


def create_app():
    page = Path(os.environ["STATIC_PAGE"]).read_bytes()
    headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(page)))]

    def static_page(environ, start_response):
        start_response("200 OK", headers)
        return [page]

    return static_page
