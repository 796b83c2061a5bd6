# Leadwerk: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	# Leadwerk's own modules as bytecode, as pip leaves an installed package: where
	# PYTHONDONTWRITEBYTECODE is set (many container images) every command would compile them
	# anew, 0.1 s of each start. A module edited later is compiled from its source as usual.
	$(BIN)/python -m compileall -q worker connectors rules config > /dev/null
	touch $(STAMP)

install: $(STAMP)

# The whole pipeline on the example config and the sample fair export, embedded defaults:
# SQLite in var/, single process, e-mails and Slack messages written to var/outbox/. One worker
# thread: leads are routed in file order, so the demo gives the same reps on every run.
demo: $(STAMP)
	mkdir -p inbox/tradefair
	cp sample/messe-hannover-2026.csv inbox/tradefair/
	LEADWERK_WORKER_THREADS=1 $(BIN)/leadwerk run --once --demo --demo-count 3
	@echo "--- three days later: the first nurture steps (run --once --now):"
	LEADWERK_WORKER_THREADS=1 $(BIN)/leadwerk run --once --now $$($(BIN)/python -c "import datetime as d; print((d.datetime.now(d.UTC) + d.timedelta(days=3)).isoformat(timespec='seconds'))")
	$(BIN)/leadwerk nurture status
	@echo "--- what the reps and contacts received (var/outbox/):"
	@ls -1 var/outbox/

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	for b in bench/bench_*.py bench/speed_to_lead.py; do [ -f $$b ] && $(BIN)/python $$b; done

clean:
	rm -rf var inbox/tradefair/done inbox/tradefair/failed
