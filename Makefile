# Two commands on a fresh machine: `make book` and `make test`. Each creates .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Jupyter Book and nbval run notebooks on the data in force: $$FKP_DATA_DIR, ./data, else synthetic.
export PYTHONHASHSEED := 0
# Notebooks run inside notebooks/: make a relative data directory absolute.
ifdef FKP_DATA_DIR
export FKP_DATA_DIR := $(abspath $(FKP_DATA_DIR))
endif
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: all venv book test unit notebooks book-check browser chromium serve bench lint format clean \
	clean-cache

all: test

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "make: the course needs Python 3.11, and '$(PYTHON)' is not (or is missing)."; \
		echo "Install 3.11 (python.org, or 'brew install python@3.11' on macOS), then run"; \
		echo "'make PYTHON=/path/to/python3.11' if python3.11 is not on your PATH."; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

## make book: execute every notebook (full profile on real data) and write _build/html/
book: $(STAMP)
	$(VENV)/bin/jupyter-book build --all --warningiserror --nitpick --keep-going .
	@echo "Open _build/html/index.html"

## make test: unit tests, every notebook under nbval (quick profile), a warning-free book build,
## and the in-browser page of that build against `fkp predict` in headless Chromium
test: unit notebooks book-check browser

unit: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -q tests

notebooks: $(STAMP)
	FKP_PROFILE=quick $(PY) -m pytest -q -p no:cacheprovider --nbval-lax \
		--nbval-sanitize-with tests/nbval_sanitize.cfg notebooks

book-check: $(STAMP)
	rm -rf _build/check
	FKP_PROFILE=quick $(VENV)/bin/jupyter-book build --all --warningiserror --nitpick \
		--path-output _build/check .

## make browser: the page "Try it in your browser" and the formulas of the book that `make book-check` built
browser: $(STAMP) chromium
	FKP_BOOK_HTML=_build/check/_build/html MPLBACKEND=Agg $(PY) -m pytest -q -rP -p no:cacheprovider \
		tests/test_browser.py

# Debian's chromium for the browser test: installed under CI (root, apt), else say how.
chromium:
	@[ -n "$$FKP_CHROMIUM" ] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null || { \
		if [ -n "$$CI" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "make: installing Debian's chromium for the browser test"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
				>/dev/null; \
		fi; }
	@[ -n "$$FKP_CHROMIUM" ] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null || { \
		echo "make: the browser test needs Chromium: 'apt-get install chromium' (Debian/Ubuntu),"; \
		echo "or set FKP_CHROMIUM=/path/to/chrome; without it 'make browser' skips, CI fails."; \
		[ -z "$$CI" ]; }

## make serve: serve the built book on http://127.0.0.1:8000 (the in-browser page needs HTTP)
serve:
	@test -f _build/html/index.html || { echo "make: no _build/html yet: run 'make book' first"; exit 1; }
	@echo "Open http://127.0.0.1:8000/book/demo.html (Ctrl-C stops the server)"
	python3 -m http.server 8000 --bind 127.0.0.1 --directory _build/html

## make bench: speed figures as `name: value` lines (not part of the tests)
bench: $(STAMP)
	@for b in $(filter-out benchmarks/bench_recipes.py,$(wildcard benchmarks/bench_*.py)); do MPLBACKEND=Agg $(PY) $$b || exit 1; done

## make bench-recipes: recipe changes (loss, EMA, weight decay, augmentation strength, width
## either way, pseudo-labels, test-time augmentation, the labels' offset, an ensemble of the
## reference's two seeds and the error they share) on one split at one budget each
## (FKP_RECIPE_MINUTES, default 4, for each of its 13 rows: about an hour in all; FKP_RECIPE_ROWS="name,name" trains
## only those rows beside the reference and its second seed)
.PHONY: bench-recipes
bench-recipes: $(STAMP)
	MPLBACKEND=Agg $(PY) benchmarks/bench_recipes.py

## make check-platforms: pip's resolver on all of requirements.txt for macOS arm64, Windows and
## Linux x86-64 (asks the package index; `make test` resolves the runtime packages only)
.PHONY: check-platforms
check-platforms: $(STAMP)
	FKP_PLATFORMS_FULL=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_platforms.py

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:
	rm -rf _build

clean-cache:
	rm -rf $${FKP_CACHE_DIR:-$$HOME/.cache/fkp}
