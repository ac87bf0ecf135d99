# Every target sets up its own virtualenv, so a fresh clone needs nothing installed by hand.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint clean venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/aperture demo

# The Redis state and cache tests need a real redis-server: install it where apt can (CI does).
test: $(STAMP)
	command -v redis-server >/dev/null || ! command -v apt-get >/dev/null || \
		( (apt-get update -qq && apt-get install -y -qq redis-server) || \
		  (command -v sudo >/dev/null && sudo -n apt-get update -qq && sudo -n apt-get install -y -qq redis-server) || \
		  echo "redis-server could not be installed: the Redis tests will skip" )
	# --dist loadfile: a test module runs in one worker, so its module fixtures (one gateway, one
	# store) see every test of the module, as the tests that read totals at the end expect.
	$(BIN)/python -m pytest -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy router collector evals optimizer emulator aperture ocr
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
