# Two entry points: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup web demo real real-more check docs test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch is pinned and installed first so that nothing
	# later pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[train,live,whisper,ray,serve,real,dev]'
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

# The static checks: lint and format (ruff), the architecture's import
# contracts (import-linter, in pyproject.toml), the browser package's types
# (tsc on JSDoc) and unit tests (node --test), and the docs site (strict).
check: $(STAMP) $(WEB_STAMP)
	$(BIN)/ruff check src tests docs/hooks.py
	$(BIN)/ruff format --check src tests docs/hooks.py
	$(BIN)/lint-imports --no-cache
	cd web && npm run --silent typecheck && node --test test/
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet -d site

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

# What CI runs: the checks, then the whole suite but the tests that need a
# GPU or the network (they skip themselves without one; see docs/development.md).
test: check
	$(BIN)/python -m pytest -q -m "not gpu and not network"

# A quick loop while developing: the same without the slow tests.
test-fast: $(STAMP) $(WEB_STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not gpu and not network"

# Real children's speech: speechocean762 (CC BY 4.0), a copy you point to;
# it never enters the repository. Resumable; see docs/real-speech.md.
real: $(STAMP)
	@test -n "$(SPEECHOCEAN762)" || { echo "usage: make real SPEECHOCEAN762=DIR (a copy of speechocean762)"; exit 2; }
	$(BIN)/phonemekit real $(SPEECHOCEAN762) --out runs/real

# The same, plus the augmentation effect table, a bundle candidate trained
# with the best augmentation, ensembles of the candidates and fine-tuning
# beside the frozen model (about 75 minutes more; docs/real-speech.md).
real-more: $(STAMP)
	@test -n "$(SPEECHOCEAN762)" || { echo "usage: make real-more SPEECHOCEAN762=DIR (a copy of speechocean762)"; exit 2; }
	$(BIN)/phonemekit real $(SPEECHOCEAN762) --out runs/real --augmentation all --finetune 1,2

bench: $(STAMP)
	$(BIN)/phonemekit benchmark --json runs/benchmark.json

clean:
	rm -rf runs cache site .pytest_cache web/dist web/node_modules
