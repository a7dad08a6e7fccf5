# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tgbench-installed

.PHONY: setup demo test test-all lint bench reports clean browser

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@# Without CUDA take the pinned CPU build first, so pip never pulls a multi-GB CUDA build.
	@if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(BIN)/python -c "import torch" 2>/dev/null; then \
		$(BIN)/python -m pip install -q torch==2.13.0; fi
	$(BIN)/python -m pip install -q -e ".[corpus,test]"
	@touch $(STAMP)

demo: setup
	$(BIN)/tgbench demo

test: setup browser
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 $(BIN)/python -m pytest -q

# The report's browser test needs Debian's chromium; install it where missing (skipped if apt is unavailable).
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 || \
		echo "chromium not installed: the browser test will skip"; }

test-all: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 $(BIN)/python -m pytest -q -m "slow or not slow"

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/tgbench bench all

# Re-fit and re-render every committed report folder from its own files (results.csv, tune.json), then
# screenshot the top of each page. A folder is made by copying a finished grid's results.csv and tune.json
# into reports/<name>/ (see reports/README.md).
reports: setup browser
	@for dir in reports/*/; do dir=$${dir%/}; \
		$(BIN)/tgbench fit $$dir >/dev/null && $(BIN)/tgbench report $$dir && \
		chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1500 \
			--virtual-time-budget=5000 --screenshot=$(CURDIR)/$$dir/report.png file://$(CURDIR)/$$dir/report.html \
			2>/dev/null || exit 1; done

clean:
	rm -rf runs .pytest_cache build *.egg-info
