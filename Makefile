# Quiver's two commands: `make demo` and `make test`. Both install what is missing, then share
# one build profile (dev, with optimized dependencies), so the world is built only once.

CARGO ?= cargo
DEMO_DIR ?= $(CURDIR)/demo_repo

.PHONY: demo test deps build fmt lint

## Install missing system packages (clang/libclang for RocksDB's bindings).
deps:
	@.ci/install-deps

build: deps
	$(CARGO) build --workspace --all-targets

## Run the demo end to end on the embedded defaults.
demo: build
	@examples/demo.sh "$(DEMO_DIR)"

## Format check, clippy, and the whole test suite.
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace --no-fail-fast

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
