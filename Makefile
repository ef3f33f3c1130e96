# The platform's commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
PROTO_FILES := $(shell find protos -name '*.proto' | sort)
GEN_DIR := gen/python

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --- set-up -----------------------------------------------------------------

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

.PHONY: install
install: $(VENV)/.installed node_modules/.installed ## Create .venv and install the pinned Python and npm packages

.PHONY: lock
lock: ## Re-pin requirements.lock from a fresh install of pyproject.toml's dependencies
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet ".[dev]"
	{ echo "# Exact versions of every Python package, direct and transitive (pip freeze of a working install)."; \
	  echo "# Regenerate with \`make lock\` after changing pyproject.toml."; \
	  .venv-lock/bin/pip freeze --all --exclude agentplatform --exclude pip; } > requirements.lock
	rm -rf .venv-lock

# --- contracts ----------------------------------------------------------------

.PHONY: proto
proto: $(VENV)/.installed ## Regenerate the Python stubs in gen/python from protos/
	rm -rf $(GEN_DIR) && scripts/gen_protos.sh $(PY) $(GEN_DIR)

.PHONY: proto-check
proto-check: $(VENV)/.installed ## Fail if the checked-in stubs differ from what protos/ generates
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && scripts/gen_protos.sh $(PY) $$tmp \
	  && diff -r $$tmp $(GEN_DIR) >/dev/null \
	  || { echo "gen/python is stale: run 'make proto' and commit the result"; exit 1; }

.PHONY: proto-lint
proto-lint: node_modules/.installed ## Lint the protos with buf
	cd protos && ../$(BUF) lint

# The contract clients build on: protos/api-baseline.binpb is the released API. A change that would break a
# client (a removed or renumbered field, a changed type) fails here; `make proto-baseline` accepts the current
# protos as the new baseline, which is a deliberate act for a new major version, not a way to silence this.
.PHONY: proto-breaking
proto-breaking: node_modules/.installed ## Fail if the protos break the released contract (buf breaking)
	cd protos && ../$(BUF) breaking --against api-baseline.binpb

.PHONY: proto-baseline
proto-baseline: node_modules/.installed ## Record the current protos as the released contract
	cd protos && ../$(BUF) build --exclude-source-info -o api-baseline.binpb

# --- running ------------------------------------------------------------------

.PHONY: run
run: install ## Start the platform: services, demo model (when no LLM is configured) and Envoy
	$(PY) -m services.launcher

# --- benchmarks ---------------------------------------------------------------

.PHONY: bench
bench: install ## Benchmark the whole stack as `make run` starts it (BENCH_ARGS="--help" for options)
	$(PY) -m bench $(BENCH_ARGS)

.PHONY: bench-runs
bench-runs: install ## Benchmark the run store alone, on SQLite and PostgreSQL (BENCH_ARGS="--help" for options)
	$(PY) -m bench.store $(BENCH_ARGS)

# --- quality ------------------------------------------------------------------

.PHONY: test
test: install proto-check proto-lint proto-breaking lint ## Run every test (unit, integration, PostgreSQL, end to end) after the checks
	$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; exit $$rc

.PHONY: lint
lint: install ## Lint the Python code with ruff
	$(VENV)/bin/ruff check services tests bench

.PHONY: clean
clean: ## Remove the virtualenv, node_modules and local data (var/)
	rm -rf $(VENV) node_modules var .pytest_cache
