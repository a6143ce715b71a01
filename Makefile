# Chaussettes.io: `make demo` runs the pipeline, `make test` runs the tests.
# Both set everything up first (a .venv with the project and its pinned dependencies, the jars);
# nothing else to install.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DURATION ?= 90

.PHONY: setup jars prereqs lint test test-fast demo ship bench clean secret compose-test compose-cluster-test compose-ha-test

setup: $(VENV)/.installed jars

# Kafka broker + Spark Kafka connector jars into .cache/jars: downloaded once (Maven if installed,
# else pyspark's Ivy), an offline no-op afterwards. The broker itself is started by demo/tests.
jars: $(VENV)/.installed
	@$(PY) finale/local_kafka.py fetch

prereqs:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "error: Python 3.10+ is needed, $(PYTHON) is " + sys.version.split()[0] + " (set PYTHON=/path/to/python3.x)")'
	@command -v java >/dev/null 2>&1 || { echo "error: Java 17+ is needed and 'java' is not on the PATH (install a JDK 17+, e.g. apt-get install openjdk-17-jdk-headless)" >&2; exit 1; }
	@java -version 2>&1 | awk -F'"' '/version/ { split($$2, v, "."); if (v[1] < 17) { print "error: Java 17+ is needed, found " $$2 " (set JAVA_HOME / PATH to a JDK 17+)" > "/dev/stderr"; exit 1 } }'

# The project in editable mode with its dev extra (pyproject.toml): finale.* imports from anywhere,
# and a code change needs no reinstall. The stamp depends on pyproject.toml: a changed pin
# reinstalls, an unchanged one is a no-op.
$(VENV)/.installed: pyproject.toml | prereqs
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

test: setup lint
	$(PY) -m pytest

# The pure tests only: no broker, no Spark, nothing slow (markers in pyproject.toml); seconds, not minutes.
test-fast: $(VENV)/.installed lint
	$(PY) -m pytest -m "not kafka and not spark and not slow"

# ruff, configured in pyproject.toml: the whole tree (the three stages, tests, bench).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# The final stage end to end (finale/tools/demo.py): DURATION seconds of traffic, 0 = until Ctrl-C.
# The dashboard is served on 127.0.0.1:$(DASHBOARD_PORT) while it runs (0: none).
DASHBOARD_PORT ?= 8080
demo: setup
	@$(PY) -m finale.tools.demo --duration $(DURATION) --dashboard-port $(DASHBOARD_PORT)

# Follow a web server's access log into Kafka's http-logs (finale/tools/ship.py: rsyslog with
# conf/rsyslog/http-logs.conf, the user's own foreground process; Ctrl-C stops it). The broker: the
# local one of `make demo` if it runs, else KAFKA_BOOTSTRAP_SERVERS, else localhost:9092.
# Needs Debian's rsyslog and rsyslog-kafka (its one-line error says so).
ship:
	@test -n "$(ACCESS_LOG)" || { echo "usage: make ship ACCESS_LOG=/path/to/access.log" >&2; exit 2; }
	@$(MAKE) --no-print-directory $(VENV)/.installed
	@$(PY) finale/ship.py --access-log "$(ACCESS_LOG)"

# Every benchmark of bench/ (bench/run_all.py) into bench/RESULTS.md, about 48 minutes on 2 idle cores (27 + the 21 of catch-up), on a
# private broker. The issue's sizes (1,000,000 lines, about an hour): BENCH_ARGS=--full.
bench: setup $(VENV)/.bench-installed
	$(PY) bench/run_all.py $(BENCH_ARGS)

$(VENV)/.bench-installed: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	@touch $@

# Learned thresholds vs injected incidents (finale/tools/evaluate.py): recall, precision, false alerts
# per hour, detection latency over seeds 1 2 3 and 30 s / 1 min windows. Extra flags: ARGS='...'.
.PHONY: evaluate
evaluate: $(VENV)/.installed
	$(PY) -m finale.tools.evaluate $(ARGS)

# The same on a real access log (finale/tools/evaluate_real.py, finale/data/README.md): false alerts per
# hour of real traffic, recall and latency of incidents injected into it.
.PHONY: evaluate-real
evaluate-real: $(VENV)/.installed
	$(PY) -m finale.tools.evaluate_real finale/data/secrepo-2021-10-22-to-26.log.gz $(ARGS)

# docker-compose.yml end to end (finale/compose_test.sh): up --build from a clean state, every
# scheduled incident alerts and nothing else does, down + up resumes without data loss, down -v.
# Needs Docker with Compose v2 only (no venv, no Java).
compose-test:
	bash finale/compose_test.sh

# The profile `cluster` end to end (finale/compose_cluster_test.sh): the analyzer on
# spark://spark-master:7077, authenticated and RPC-encrypted, alerts on every incident.
compose-cluster-test:
	bash finale/compose_cluster_test.sh

# Three brokers (docker-compose.ha.yml) under load: a broker, then the active controller, killed for
# 60 s each (finale/compose_ha_test.sh): no line lost or doubled, the analyzer never stops.
compose-ha-test:
	bash finale/compose_ha_test.sh

# One-time step of `--secure` and docker compose: the shared Spark secret, 64 random hex digits, in
# the git-ignored .secrets/ (mode 0700: only you can read what is inside; the file itself is 0644
# so that the non-root user of the containers can read the compose secret bind-mounted from it).
# An existing secret is kept: every Spark process of a deployment must share the same one; its
# modes are set again (a file left 0600 by an older stage-2 --secure: the containers could not read it).
# complet/spark_streaming_analyzer.py --secure creates the same file the same way.
SECRET_FILE := .secrets/spark-authenticate.secret
secret: $(SECRET_FILE)
	@chmod 700 $(dir $(SECRET_FILE)) && chmod 644 $(SECRET_FILE)
$(SECRET_FILE):
	@mkdir -p $(@D) && chmod 700 $(@D)
	@umask 022 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > $@.tmp && mv $@.tmp $@
	@echo "created $@ (keep it out of git; share it only with the Spark processes of this deployment)"

# Removes the venv and the local state (broker data, checkpoints, thresholds); .cache keeps the jars.
clean:
	-@test -x $(PY) && $(PY) finale/local_kafka.py stop
	rm -rf $(VENV) .state .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
