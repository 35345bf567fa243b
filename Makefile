# dl-harness: `make run` runs the quick suite and writes the HTML report;
# `make test` runs the test suite. Both create .venv and install pinned deps first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint install bench clean browser

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e . || $(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/harness run --suite quick --report

# the suite on TEST_WORKERS pytest-xdist workers (each file's tests stay together, in
# order, on one worker); TEST_WORKERS=0 runs it in this one process
TEST_WORKERS ?= 2
test: $(STAMP) browser
	$(PY) -m pytest -q --durations=15 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# headless Debian chromium for tests/test_browser.py (playwright drives it; it never
# downloads a browser). Installed with apt when missing and we are root; otherwise the
# browser tests skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 && \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; } || \
	    echo "note: could not install chromium with apt-get; the browser tests will be skipped"; \
	  else echo "note: chromium missing and not root (or no apt-get); the browser tests will be skipped"; fi; }

# layer contracts (import-linter) and ruff; .ci/run runs this before the tests
lint: $(STAMP)
	VENV=$(VENV) bash .ci/lint

bench: $(STAMP)
	$(PY) bench/fidelity.py

clean:
	rm -rf $(VENV) build *.egg-info
