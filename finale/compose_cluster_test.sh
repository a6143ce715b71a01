#!/usr/bin/env bash
# `make compose-cluster-test`: the compose stack with the analyzer on the profile `cluster`'s Spark
# standalone cluster (spark://spark-master:7077, one worker), authenticated and RPC-encrypted.
# Needs Docker with Compose v2 only.
#   1. from a clean state (own project name, volumes removed first), `--profile cluster up --build`
#      with SPARK_MASTER=spark://spark-master:7077;
#   2. the analyzer runs as an application of the master with the worker's cores as its executors,
#      and its Spark conf has spark.authenticate and spark.network.crypto.enabled (its banner);
#   3. compose_check.py: every incident of the generator's truth file alerted, nothing else did;
#   4. `down -v`, also on failure. Every container's log: .state/compose-cluster-test/last.log
# Env: KAFKA_HOST_PORT (default 29094), SPARK_UI_PORT (default 28081), DASHBOARD_HOST_PORT
# (default 28082), all on loopback only;
# COMPOSE_TEST_TIMEOUT (seconds per wait, default 600).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=finale/compose_lib.sh
source finale/compose_lib.sh

NAME=compose-cluster-test
export COMPOSE_PROJECT_NAME=chaussettes-cluster-test
export KAFKA_HOST_PORT=${KAFKA_HOST_PORT:-29094}
export SPARK_UI_PORT=${SPARK_UI_PORT:-28081}
export DASHBOARD_HOST_PORT=${DASHBOARD_HOST_PORT:-28082}
export SPARK_MASTER=spark://spark-master:7077
TIMEOUT=${COMPOSE_TEST_TIMEOUT:-600}
LOGS=.state/compose-cluster-test
dc() { docker compose --profile cluster "$@"; }
trap finish EXIT

[ -s .secrets/spark-authenticate.secret ] || make --no-print-directory secret
mkdir -p "$LOGS"
dc --profile check down -v --remove-orphans > /dev/null 2>&1
say "up --build, the analyzer on $SPARK_MASTER"
dc up --build --detach --quiet-pull 2>&1 | tail -n 3
wait_healthy analyzer

# The master's own view (its JSON API, from inside its container): the analyzer is a running
# application holding the worker's cores.
apps=$(dc exec -T spark-master python -c 'import json, urllib.request
state = json.load(urllib.request.urlopen("http://spark-master:8080/json/"))
print(" ".join("%s:%s:%s" % (a["name"], a["cores"], a["state"]) for a in state["activeapps"]),
      "workers:%d" % len(state["workers"]))')
say "master: $apps"
case "$apps" in
  *chaussettes-finale-analyzer:[1-9]*:RUNNING*workers:1*) ;;
  *) fail "the analyzer is not running on the cluster's worker ($apps)" ;;
esac
banner=$(dc logs --no-color analyzer | grep -m 1 -o 'spark security: .*')
say "analyzer: $banner"
case "$banner" in
  *spark.authenticate=true*spark.network.crypto.enabled=true*) ;;
  *) fail "the analyzer does not run authenticated and encrypted ($banner)" ;;
esac

say "waiting for the generator's incidents"
dc --profile check run --rm --no-deps check || fail "alerts do not match the incidents"
say "PASSED: on spark://, authenticated and RPC-encrypted, every incident alerted and nothing else"
