# The two commands: `make run` serves on 127.0.0.1:50051 with an embedded Valkey, `make test` runs
# the suite. Both create (or reuse) .venv in the repo root from nothing but Python 3.11+.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_FILES := $(wildcard protos/livestate/v1/*.proto)
GEN_DIR := clients

.PHONY: run demo test test-cluster faults lint typecheck proto proto-check proto-ts proto-ts-check api-docs api-docs-check buf-lint bench ci clean

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "livestate needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[server,demo,dispatch,dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/livestate serve --listen $${LIVESTATE_LISTEN:-127.0.0.1:50051}

# The whole system alive in a terminal: embedded Valkey, the server, a simulated fleet, schedulers.
demo: $(STAMP)
	$(VENV)/bin/livestate demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The suite against a 3-primary Redis Cluster the tests start (tests marked single_redis skip).
test-cluster: $(STAMP)
	LIVESTATE_TEST_CLUSTER=1 $(PY) -m pytest $(PYTEST_ARGS)

# The fault suite: Redis killed, frozen, restarted and wiped under load, histories checked. Not
# part of `make test` (pyproject's norecursedirs); each test has its own pytest-timeout.
faults: $(STAMP)
	$(PY) -m pytest tests/faults $(PYTEST_ARGS)

# Regenerates the committed stubs from protos/ (pinned grpcio-tools, so output is reproducible).
PROTOC = $(PY) -m grpc_tools.protoc -Iprotos --python_out=$(1) --pyi_out=$(1) --grpc_python_out=$(1) $(PROTO_FILES)

proto: $(STAMP)
	$(call PROTOC,$(GEN_DIR))

# Fails when the committed stubs differ from what `make proto` would write.
proto-check: $(STAMP)
	@tmp=$$(mktemp -d) && $(call PROTOC,$$tmp) && \
		diff -r -x __pycache__ $$tmp/livestate/v1 $(GEN_DIR)/livestate/v1 && rm -rf $$tmp && \
		echo "generated stubs match protos/"

# TypeScript stubs (clients/typescript): protoc-gen-es from the committed lockfile, run by buf.
TS_DIR := clients/typescript
TS_GEN = $(VENV)/bin/buf generate --template $(TS_DIR)/buf.gen.yaml

$(TS_DIR)/node_modules/.installed: $(TS_DIR)/package-lock.json
	cd $(TS_DIR) && npm ci --no-audit --no-fund
	@touch $@

proto-ts: $(STAMP) $(TS_DIR)/node_modules/.installed
	$(TS_GEN)

proto-ts-check: $(STAMP) $(TS_DIR)/node_modules/.installed
	@tmp=$$(mktemp -d) && $(TS_GEN) -o $$tmp && \
		diff -r $$tmp/$(TS_DIR)/src/gen $(TS_DIR)/src/gen && rm -rf $$tmp && \
		echo "typescript stubs match protos/"

# The API reference (docs/api/) from the proto comments, by sabledocs from PyPI, in a venv of its
# own (it pins protobuf below what our stubs need). Committed; api-docs-check fails on drift.
DOCS_VENV := .venv-docs
DOCS_STAMP := $(DOCS_VENV)/.installed
API_DIR := docs/api
WKT_DIR = $$($(PY) -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
API_DOCS = $(PY) -m grpc_tools.protoc -Iprotos -I$(WKT_DIR) --include_source_info --include_imports \
	-o $(1)/descriptor.pb $(PROTO_FILES) && cp docs/sabledocs.toml $(1)/ && \
	(cd $(1) && $(CURDIR)/$(DOCS_VENV)/bin/sabledocs >/dev/null)

$(DOCS_STAMP):
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install --quiet sabledocs==0.19.1050
	@touch $@

api-docs: $(STAMP) $(DOCS_STAMP)
	@tmp=$$(mktemp -d) && $(call API_DOCS,$$tmp) && rm -rf $(API_DIR) && mv $$tmp/out $(API_DIR) && \
		rm -rf $$tmp && echo "wrote $(API_DIR)/"

api-docs-check: $(STAMP) $(DOCS_STAMP)
	@tmp=$$(mktemp -d) && $(call API_DOCS,$$tmp) && diff -r $$tmp/out $(API_DIR) && rm -rf $$tmp && \
		echo "API reference matches protos/"

buf-lint: $(STAMP)
	$(VENV)/bin/buf lint

lint: $(STAMP)
	$(VENV)/bin/ruff check server clients tests bench
	$(VENV)/bin/ruff format --check server clients tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# FULL=1 adds the 5,000-stream fleet, 100,000-node memory and writes bench/results/<date>.md.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[server,demo,dispatch,dev,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	FULL=$(FULL) $(PY) -m bench

ci:
	bash .ci/run

clean:
	rm -rf $(VENV) $(DOCS_VENV) .pytest_cache .mypy_cache .ruff_cache
