# make run: set up, bring the database to the latest revision, serve the blog.
# make test: set up and run the tests (about 6 minutes with both servers and the browser).
# make test-fast: only the tests that start no process, on SQLite (under a minute).
# make coverage: the tests under coverage, then the lines of the blog they never ran.
# make lint: ruff (lint and format) and mypy, as CI runs them.
# make bench: set up and run the benchmarks (a few minutes; prints tables).
#   The load benchmark needs wrk (Debian: apt-get install wrk).
VENV := .venv
# make run HOST=0.0.0.0 PORT=5001 serves elsewhere than 127.0.0.1:5000.
HOST ?= 127.0.0.1
PORT ?= 5000
PYTHON := $(VENV)/bin/python
CHECKED := blog run.py database_safety.py before_migrations.py alembic tests benchmarks

.PHONY: run test test-fast coverage lint bench clean

run: $(VENV)/installed
	@test -f blog.db || $(PYTHON) run.py init
	$(VENV)/bin/alembic upgrade head
	$(PYTHON) run.py --host $(HOST) --port $(PORT)

test: $(VENV)/dev-installed
	$(PYTHON) -m pytest

coverage: $(VENV)/dev-installed
	rm -f .coverage .coverage.*
	$(PYTHON) -m coverage run -m pytest
	$(PYTHON) -m coverage combine --quiet
	$(PYTHON) -m coverage report

# The in-process tests on SQLite alone, for the edit-and-test loop.
test-fast: $(VENV)/dev-installed
	env -u BLOG_TEST_POSTGRES_URL -u BLOG_TEST_MYSQL_URL $(PYTHON) -m pytest -m "not processes"

lint: $(VENV)/dev-installed
	$(VENV)/bin/ruff check $(CHECKED)
	$(VENV)/bin/ruff format --check $(CHECKED)
	$(VENV)/bin/mypy

bench: $(VENV)/dev-installed
	$(PYTHON) -m benchmarks.migrations
	@if [ -n "$$BLOG_TEST_POSTGRES_URL$$BLOG_TEST_MYSQL_URL" ]; then $(PYTHON) -m benchmarks.server_migrations; \
	else echo "set BLOG_TEST_POSTGRES_URL or BLOG_TEST_MYSQL_URL for the server migration benchmark"; fi
	@command -v wrk >/dev/null || { echo "the load benchmark needs wrk: apt-get install wrk"; exit 1; }
	$(PYTHON) -m benchmarks.load
	$(PYTHON) -m benchmarks.page_cache_memory

$(VENV)/installed: requirements.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -r requirements.txt
	touch $@

# The tests also need the database drivers, the migration test kit, coverage
# and the browser driver; lint needs ruff and mypy. The browser tests check
# every page with axe-core and the Nu Html Checker, from the npm registry
# (scripts off: the checker's would fetch a Java of its own).
$(VENV)/dev-installed: $(VENV)/installed requirements-servers.txt requirements-dev.txt
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt
	@if command -v npm >/dev/null; then \
		npm install --silent --no-audit --no-fund --ignore-scripts --prefix $(VENV)/page-checkers \
			axe-core@4.14.1 vnu-jar@26.9.27; \
	else echo "npm is missing: the browser tests will skip without axe-core and the Nu Html Checker"; fi
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
