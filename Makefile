# chiplofi — set-up, run, test, bench.
# `make run` and `make test` work on a fresh Debian machine as root: they install whatever is
# missing and are idempotent. `make run` installs only what playing needs (the Debian packages
# marked "run" in deploy/apt-packages.txt, .venv with torch pinned to the CPU build, the project);
# `make test` (and `make setup`) add the "test" packages and the project's [test] extras; `make
# test` then lints (ruff) before it runs the tests.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_PIN := torch==2.13.0
# deploy/apt-packages.txt by role (deploy/install.sh reads the same file on a server).
APT_RUN := $(shell awk '!/^[[:space:]]*(\#|$$)/ && $$2 == "run" {print $$1}' deploy/apt-packages.txt)
APT_ALL := $(shell awk '!/^[[:space:]]*(\#|$$)/ {print $$1}' deploy/apt-packages.txt)
STAMP_RUN := $(VENV)/.chiplofi-installed
STAMP_TEST := $(VENV)/.chiplofi-test-installed

.PHONY: setup setup-run apt-run apt-test run test bench soak soundfont clean

setup: apt-test $(STAMP_TEST)
setup-run: apt-run $(STAMP_RUN)

# Installs the missing ones of the packages $(1); as non-root, names them and stops.
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "error: missing Debian packages:$$missing (run as root or install them)"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

apt-run:
	$(call apt_install,$(APT_RUN))

apt-test:
	$(call apt_install,$(APT_ALL))

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-install when the project's metadata changes.
$(STAMP_RUN): pyproject.toml | $(PY)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e .
	touch $(STAMP_RUN)

# tests/support is the test-support package (`testkit`) that the tests and bench/ import; it is
# installed here only, never on a server.
$(STAMP_TEST): $(STAMP_RUN) tests/support/pyproject.toml
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q -e tests/support
	touch $(STAMP_TEST)

# The stream, locally: status page and live player at http://127.0.0.1:8080/, recordings under
# out/stream/recordings. With CHIPLOFI_STREAM_KEY set it also goes to YouTube's primary ingest.
run: setup-run
	$(VENV)/bin/chiplofi stream $(if $(CONFIG),--config $(CONFIG))

# The linter first (ruff, [tool.ruff] in pyproject.toml: under a second, so a finding fails CI
# before the minutes of tests), then the tests on TEST_WORKERS pytest-xdist workers
# (tests/conftest.py: what runs together, what first). Most tests wait on real time, so more
# workers than the 2 cores finish sooner. Tests marked `alone` (a busy loop that takes a core)
# run afterwards by themselves: beside the suite they starved its paced streams, and the suite
# starved them.
TEST_WORKERS ?= 4
test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder -m "not alone"
	$(PY) -m pytest -q -m alone

# Every benchmark but the long memory runs (`make soak`; bench/bench_memory.py, a diagnosis
# tool), each timed, then a summary. A missed goal (exit 2) is a figure, not a failure: every
# script still runs; an error (any other exit) fails.
bench: setup
	@began=$$(date +%s); summary=""; failed=0; \
	for script in $(filter-out bench/bench_soak.py bench/bench_memory.py,$(wildcard bench/bench_*.py)); do \
	  echo "== $$script"; start=$$(date +%s); $(PY) $$script; code=$$?; \
	  case $$code in 0) what=ok;; 2) what="goal missed";; *) what="error $$code"; failed=1;; esac; \
	  summary="$$summary$$script: $$(( $$(date +%s) - start )) s, $$what\n"; done; \
	printf "== summary (load average %s)\n$$summary== make bench: %d s in all\n" \
	  "$$(cut -d' ' -f1-3 /proc/loadavg)" $$(( $$(date +%s) - began )); exit $$failed

# Accelerated soak: 24 h of audio through the whole pipeline to a video file, unpaced (about 2 h
# on 2 cores, ~10 GB of temporary disk); writes bench/results/soak.json. HOURS=N for a shorter run.
soak: setup
	$(PY) bench/bench_soak.py --hours $(or $(HOURS),24)

soundfont: setup-run
	$(VENV)/bin/chiplofi soundfont build

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
