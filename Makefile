# Two entry points: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup web demo test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch is pinned and installed first so that nothing
	# later pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[train,live,whisper,ray,serve,dev]'
	touch $(STAMP)

# The browser package (web/): onnxruntime-web and esbuild from the npm
# lock file, bundled into web/dist with the live presets and silero-vad's
# model from the Python package (the very files `phonemekit live` uses).
WEB_STAMP := web/dist/.built

web: $(WEB_STAMP)

$(WEB_STAMP): $(STAMP) web/package-lock.json web/build.mjs $(wildcard web/src/*.js web/page/*) $(wildcard src/phonemekit/live/presets/*.json)
	cd web && npm ci --no-audit --no-fund --loglevel=error && node build.mjs
	$(BIN)/python -m phonemekit.serve.web web/dist
	touch $(WEB_STAMP)

# The page (`serve --web`) is built too when node and npm are there; the
# pipeline itself does not need it.
demo: $(STAMP)
	-$(MAKE) --no-print-directory web
	$(BIN)/phonemekit demo --out runs/demo

# What CI runs: the whole suite but the tests that need a GPU or the network
# (they skip themselves without one; see the README).
test: $(STAMP) $(WEB_STAMP)
	$(BIN)/python -m pytest -q -m "not gpu and not network"

# A quick loop while developing: the same without the slow tests.
test-fast: $(STAMP) $(WEB_STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not gpu and not network"

bench: $(STAMP)
	$(BIN)/phonemekit benchmark --json runs/benchmark.json

clean:
	rm -rf runs cache .pytest_cache web/dist web/node_modules
