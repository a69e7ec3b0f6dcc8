# Everything a fresh machine needs: `make run` and `make test` create .venv and install first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run demo test lint chaos bench bench-jobs bench-failover bench-bootstrap install clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,spark]'
	@touch $(STAMP)

# The Python packages, then the embedded Apache Kafka broker: checks for a Java 17+ and resolves
# the broker's jars through Maven into build/kafka-<version>/ (once; deploy/broker/pom.xml).
install: $(STAMP)
	@$(BIN)/profiles broker install

run: install
	$(BIN)/profiles demo

demo: install
	$(BIN)/profiles demo --exit

# Fault injection, 5 seeds (about 230,000 events each through 3 workers, worker and broker
# faults; logs in run/chaos/seed-N/) and 100,000 fuzz cases.
chaos: install
	$(BIN)/profiles chaos --runs 5 --guarantee exactly_once_v2 --standby 1 --workdir run/chaos-eos
	$(BIN)/profiles chaos --runs 2 --seed 47 --guarantee at_least_once
	FUZZ_EXAMPLES=100000 FUZZ_LIVE=100000 $(BIN)/python -m pytest -q -s --timeout 1800 tests/unit/features/test_fuzz_validator.py tests/integration/test_fuzz_live.py

bench: install
	$(BIN)/profiles bench

bench-jobs: install
	$(BIN)/profiles bench-jobs

# Failover after a worker's SIGKILL, 100,000 and 1,000,000 users in state, with and without
# standby copies (BENCHMARKS.md, "Failover and restore").
bench-failover: install
	$(BIN)/profiles bench-failover --users 100000 --users 1000000

# What the timer fencing still saves under exactly_once_v2: a worker frozen past its session
# with a transaction open, then with none, fencing on and off (docs/RELIABILITY.md).
bench-fencing: install
	$(BIN)/python -m tools.bench.fencing --runs 3 --freeze open --workdir run/bench-fencing
	$(BIN)/python -m tools.bench.fencing --runs 5 --freeze closed --workdir run/bench-fencing-closed

# Users and events bootstrapped per second from a log, 1,000,000 users, local engine and Spark
# (BENCHMARKS.md, "Bootstrap from the lake").
bench-bootstrap: install
	$(BIN)/profiles bench-bootstrap --users 1000000

# ruff (pyflakes, pycodestyle, import order, private access outside streams/faust_compat/,
# rocksdict outside streams/state/rocksdb.py) and mypy on features/, reference/, streams/state/,
# user_profile_system/ (strict), streams/, offline/, bootstrap/ and deploy/ (pyproject.toml). `make test` runs
# it first.
LINT_PATHS ?= streams features reference user_profile_system deploy offline bootstrap tools tests
lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy

test: install lint
	$(BIN)/python -m pytest -q -ra --durations=15 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) run data build *.egg-info .pytest_cache .hypothesis test-artifacts
