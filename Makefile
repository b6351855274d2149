# kvwatch -- the two commands the README promises, and a few helpers.
#
#   make run    replay the bundled real vLLM + LMCache logs (summary and metrics)
#   make test   lint and the whole test suite in a project venv
#   make bench  kvwatch replay against mtail on a generated 2M-line log
#
# Each target installs what it needs: a venv under .venv (pip), and the Debian
# packages the suite runs for real (promtool from prometheus, mtail, GNU time).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DEBIAN_PACKAGES := prometheus mtail time

.PHONY: run test bench lint system-deps clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# promtool (package prometheus), mtail, GNU time, systemd-analyze and openssl, when missing.
system-deps:
	@missing=""; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v mtail >/dev/null || missing="$$missing mtail"; \
	[ -x /usr/bin/time ] || missing="$$missing time"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; \
	  else echo "not root and no sudo: install$$missing yourself; tests that need them are skipped" >&2; exit 0; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint: $(INSTALLED)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: $(INSTALLED) system-deps lint
	$(PY) -m pytest

run: $(INSTALLED)
	$(VENV)/bin/kvwatch replay tests/fixtures/samples/vllm-0.32.0-cpu-lmcache-0.5.6.log \
	    tests/fixtures/samples/vllm-0.32.0-cpu-lmcache-0.5.6-degraded.log tests/fixtures/samples/seed-rocm-mi325x.log
	$(VENV)/bin/kvwatch replay --format prometheus tests/fixtures/samples/vllm-0.32.0-cpu-lmcache-0.5.6.log \
	    | grep -E '^kvwatch_(lmcache_(lookups|lookup_tokens|hit_tokens)_total|vllm_(external_)?prefix_cache_hit_ratio)'

bench: $(INSTALLED) system-deps
	$(PY) tests/benchmarks/run_replay_bench.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache .hypothesis
