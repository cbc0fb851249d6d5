# One command per habit. Targets create .venv and install what they need by themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= yunying-data
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast lint bench demo clean i18n

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest_bench.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/analytics_bench.py $(ANALYTICS_BENCH_ARGS)
	$(BIN)/python benchmarks/segments_bench.py $(SEGMENTS_BENCH_ARGS)
	$(BIN)/python benchmarks/activities_bench.py $(ACTIVITIES_BENCH_ARGS)
	$(BIN)/python benchmarks/console_bench.py $(CONSOLE_BENCH_ARGS)

demo: $(STAMP)
	$(BIN)/yunying demo --data-dir $(DATA)

# Console translations: re-extract the strings of templates and code, merge them into the .po
# catalogs (translate the new entries in zh_CN), then check. The .po files are compiled in memory.
CONSOLE := src/yunying/console
# Feature modules whose error messages (marked M_ where raised) the console shows translated.
MESSAGE_SOURCES := src/yunying/errors.py src/yunying/analytics src/yunying/audience \
	src/yunying/activities src/yunying/risk src/yunying/state/projects.py
i18n: $(STAMP)
	$(BIN)/pybabel extract -F $(CONSOLE)/babel.cfg -k N_ -k M_ --no-location --sort-output \
		--project Yunying -o $(CONSOLE)/locale/messages.pot $(CONSOLE) $(MESSAGE_SOURCES)
	$(BIN)/pybabel update -i $(CONSOLE)/locale/messages.pot -d $(CONSOLE)/locale \
		--no-fuzzy-matching --ignore-obsolete
	$(BIN)/pybabel compile --statistics -d $(CONSOLE)/locale -o /dev/null -l zh_CN \
		-i $(CONSOLE)/locale/zh_CN/LC_MESSAGES/messages.po

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
