# make run: set up, bring the database to the latest revision, serve the blog.
# make test: set up and run the tests.
# make bench: set up and run the benchmarks (a few minutes; prints tables).
#   The load benchmark needs wrk (Debian: apt-get install wrk).
VENV := .venv
PYTHON := $(VENV)/bin/python

.PHONY: run test bench clean

run: $(VENV)/installed
	@test -f blog.db || $(PYTHON) run.py init
	$(VENV)/bin/alembic upgrade head
	$(PYTHON) run.py

test: $(VENV)/installed
	$(PYTHON) -m pytest

bench: $(VENV)/installed
	$(PYTHON) -m tests.benchmarks
	@command -v wrk >/dev/null || { echo "the load benchmark needs wrk: apt-get install wrk"; exit 1; }
	$(PYTHON) -m tests.load_benchmark

# requirements-dev.txt includes requirements.txt, and adds what the tests use (selenium).
$(VENV)/installed: requirements.txt requirements-servers.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
