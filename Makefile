# The platform's commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
PROTO_FILES := $(shell find protos -name '*.proto' | sort)
GEN_DIR := gen/python
SDK_DIR := clients/python
SDK_GEN_DIR := $(SDK_DIR)/agentplatform_client/_proto

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --- set-up -----------------------------------------------------------------

$(VENV)/.installed: requirements.lock pyproject.toml $(SDK_DIR)/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e $(SDK_DIR)
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
	  && diff -r -x __pycache__ $$tmp $(GEN_DIR) >/dev/null \
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

# The public API's descriptor set (no source info: smaller, and stable under comment edits), which Envoy's
# grpc_json_transcoder reads for the REST paths (the google.api.http annotations). Checked in like gen/python, so
# `make run` needs no buf; the gateway config embeds it (services/launcher/gateway_config.py).
API_DESCRIPTOR := gateway/api-descriptor.binpb
PUBLIC_PROTOS := --path agentplatform/agents/v1 --path agentplatform/engine/v1 --path agentplatform/runs/v1 \
  --path agentplatform/tools/v1

.PHONY: descriptor
descriptor: node_modules/.installed ## Rebuild the public API's descriptor set the gateway transcodes REST with
	cd protos && ../$(BUF) build --exclude-source-info --as-file-descriptor-set $(PUBLIC_PROTOS) -o ../$(API_DESCRIPTOR)

.PHONY: descriptor-check
descriptor-check: node_modules/.installed ## Fail if the checked-in descriptor set differs from what protos/ builds
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT \
	  && (cd protos && ../$(BUF) build --exclude-source-info --as-file-descriptor-set $(PUBLIC_PROTOS) -o $$tmp/api.binpb) \
	  && cmp -s $$tmp/api.binpb $(API_DESCRIPTOR) \
	  || { echo "$(API_DESCRIPTOR) is stale: run 'make descriptor' and commit the result"; exit 1; }

# The OpenAPI document of the REST paths (services/launcher/openapi.py), from the protos with their comments;
# checked in like the descriptor set, served by the gateway at GET /api/openapi.json.
OPENAPI := gateway/openapi.json

.PHONY: openapi
openapi: $(VENV)/.installed node_modules/.installed ## Regenerate the OpenAPI document of the REST paths (gateway/openapi.json)
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT \
	  && (cd protos && ../$(BUF) build --as-file-descriptor-set $(PUBLIC_PROTOS) -o $$tmp/api.binpb) \
	  && $(PY) -m services.launcher.openapi $$tmp/api.binpb > $$tmp/openapi.json && mv $$tmp/openapi.json $(OPENAPI)

# The containers' Envoy config, rendered by the command its own header holds (tests/deploy checks it for drift).
DEPLOY_ENVOY := deploy/gateway/envoy.yaml

.PHONY: deploy-gateway
deploy-gateway: $(VENV)/.installed ## Re-render deploy/gateway/envoy.yaml after a change to gateway/ (the command in its header)
	@tmp=$$(mktemp) && trap 'rm -f $$tmp' EXIT \
	  && command=$$(grep -m1 '^# .venv/bin/python -c' $(DEPLOY_ENVOY) | sed 's/^# //') \
	  && { sed '/^# ---- rendered/q' $(DEPLOY_ENVOY); eval "$$command"; } > $$tmp && cp $$tmp $(DEPLOY_ENVOY)

.PHONY: openapi-check
openapi-check: $(VENV)/.installed node_modules/.installed ## Fail if the checked-in OpenAPI document differs from what protos/ generates
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT \
	  && (cd protos && ../$(BUF) build --as-file-descriptor-set $(PUBLIC_PROTOS) -o $$tmp/api.binpb) \
	  && $(PY) -m services.launcher.openapi $$tmp/api.binpb > $$tmp/openapi.json \
	  && cmp -s $$tmp/openapi.json $(OPENAPI) \
	  || { echo "$(OPENAPI) is stale: run 'make openapi' and commit the result"; exit 1; }

# The typed browser client (clients/web, @agentplatform/client): TypeScript generated by protoc-gen-es from the
# public protos only (clients/web/buf.gen.yaml lists them), checked in like gen/python, built into dist/ by tsc.
CLIENT_DIR := clients/web
TSC := node_modules/.bin/tsc

.PHONY: client
client: node_modules/.installed ## Regenerate the TypeScript client from protos/ and build it (clients/web/dist)
	cd $(CLIENT_DIR) && ../../$(BUF) generate
	$(TSC) -p $(CLIENT_DIR)/tsconfig.json

.PHONY: client-check
client-check: node_modules/.installed ## Fail if the checked-in TypeScript client differs from what protos/ generates
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && (cd $(CLIENT_DIR) && ../../$(BUF) generate -o $$tmp) \
	  && diff -r $$tmp/src/gen $(CLIENT_DIR)/src/gen >/dev/null \
	  || { echo "$(CLIENT_DIR)/src/gen is stale: run 'make client' and commit the result"; exit 1; }
	@$(TSC) -p $(CLIENT_DIR)/tsconfig.json --noEmit \
	  || { echo "$(CLIENT_DIR)/src/index.ts no longer compiles against the generated code"; exit 1; }

# The package as it would be published: `npm pack` runs its prepack (tsc into dist/, the LICENSE copied in).
# tests/e2e/test_client_package.py packs it the same way and installs the tarball into a scratch project.
.PHONY: client-pack
client-pack: node_modules/.installed ## Build and pack the TypeScript client: build/agentplatform-client-<version>.tgz
	mkdir -p build && cd $(CLIENT_DIR) && npm pack --pack-destination ../../build

# The Python SDK (clients/python, agentplatform-client) carries its own stubs of the public protos, generated into
# its package as agentplatform_client._proto (scripts/gen_client_protos.sh says why), checked in like gen/python.
.PHONY: sdk
sdk: $(VENV)/.installed ## Regenerate the Python SDK's stubs (clients/python) from the public protos
	rm -rf $(SDK_GEN_DIR) && scripts/gen_client_protos.sh $(PY) $(SDK_GEN_DIR)

.PHONY: sdk-check
sdk-check: $(VENV)/.installed ## Fail if the Python SDK's checked-in stubs differ from what protos/ generates
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && scripts/gen_client_protos.sh $(PY) $$tmp \
	  && diff -r -x __pycache__ $$tmp $(SDK_GEN_DIR) >/dev/null \
	  || { echo "$(SDK_GEN_DIR) is stale: run 'make sdk' and commit the result"; exit 1; }

# --- running ------------------------------------------------------------------

.PHONY: run
run: install ## Start the platform: services, demo model (when no LLM is configured) and Envoy
	$(PY) -m services.launcher

.PHONY: api-key
api-key: $(VENV)/.installed ## Make an API key and its AUTH_API_KEYS entry (USER_ID=alice ROLE=user|admin)
	@test -n "$(USER_ID)" || { echo "usage: make api-key USER_ID=alice [ROLE=admin]"; exit 2; }
	@$(PY) -m services.common.auth --user "$(USER_ID)" --role "$(or $(ROLE),user)"

# --- benchmarks ---------------------------------------------------------------

.PHONY: bench
bench: install ## Benchmark the whole stack as `make run` starts it (BENCH_ARGS="--help" for options)
	$(PY) -m bench $(BENCH_ARGS)

.PHONY: scale-demo
scale-demo: install ## Every service in replicas on one PostgreSQL, under load and faults; prints what held (SCALE_ARGS="thread")
	$(PY) -m bench.scale $(SCALE_ARGS)

.PHONY: bench-runs
bench-runs: install ## Benchmark the run store alone, on SQLite and PostgreSQL (BENCH_ARGS="--help" for options)
	$(PY) -m bench.store $(BENCH_ARGS)

# --- quality ------------------------------------------------------------------

.PHONY: test
test: install proto-check descriptor-check openapi-check sdk-check client-check proto-lint proto-breaking lint typecheck ## Run every test (unit, integration, PostgreSQL, end to end) after the checks
	$(PY) -m pytest -q -p no:cacheprovider --durations=15; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; exit $$rc

.PHONY: lint
lint: install ## Lint the Python code with ruff
	$(VENV)/bin/ruff check services tests bench $(SDK_DIR)

# pyproject.toml's [tool.mypy] says what is checked and how strictly; the cache in .mypy_cache makes a re-run
# after a small change take seconds.
.PHONY: typecheck
typecheck: install ## Type-check services/ with mypy, against the generated stubs in gen/python
	$(PY) -m mypy

.PHONY: clean
clean: ## Remove the virtualenv, node_modules and local data (var/)
	rm -rf $(VENV) node_modules var .pytest_cache .mypy_cache
