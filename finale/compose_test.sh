#!/usr/bin/env bash
# `make compose-test`: docker-compose.yml end to end. Needs Docker with Compose v2, nothing else.
#   1. from a clean state (own project name, volumes removed first), `up --build`;
#   2. compose_check.py in the stack: every incident of the generator's truth file alerted, no
#      alert outside them (the analyzer alerts while its windows are open); the dashboard has
#      the traffic's windows and the alerts;
#   3. `down` + `up` (volumes kept): the analyzer resumes on its checkpoint (first batch id > 0,
#      also when its stop left nothing to re-run and it waits for the generator's new lines)
#      and reads new lines without an offset reset or data-loss warning;
#   4. `down -v`, also on failure.
# The profile `monitoring` runs in phases 1 and 2 too: during phase 1's check, Prometheus must
# scrape the analyzer (up == 1) and Alertmanager must hold an alert of every incident (its scope
# and entity), posted by the alert notifier.
# Every container's log: .state/compose-test/<phase>.log
# Env: KAFKA_HOST_PORT (default 29092, loopback only, so a stack or broker on 9092 is not hit),
# DASHBOARD_HOST_PORT (default 28080, same reason),
# COMPOSE_TEST_TIMEOUT (seconds per wait, default 600).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=finale/compose_lib.sh
source finale/compose_lib.sh

NAME=compose-test
export COMPOSE_PROJECT_NAME=chaussettes-compose-test
export KAFKA_HOST_PORT=${KAFKA_HOST_PORT:-29092}
export PROMETHEUS_HOST_PORT=${PROMETHEUS_HOST_PORT:-29090}
export ALERTMANAGER_HOST_PORT=${ALERTMANAGER_HOST_PORT:-29093}
export DASHBOARD_HOST_PORT=${DASHBOARD_HOST_PORT:-28080}
TIMEOUT=${COMPOSE_TEST_TIMEOUT:-600}
LOGS=.state/compose-test
dc() { docker compose --profile monitoring "$@"; }

analyzer_status() {  # the analyzer's status file, as its queries' last batch ids and input rows
  dc exec -T analyzer python -c 'import json
queries = json.load(open("/tmp/analyzer-status.json"))["queries"]
print(" ".join("%s:%s:%s" % (name, query.get("batch_id"), query.get("rows_read")) for name, query in sorted(queries.items())))'
}

wait_batches() {  # until both queries have run a micro-batch (in this container)
  local start=$SECONDS
  until analyzer_status | grep -Eq '^alerts:[0-9]+:[0-9]+ dead-letters:[0-9]+:[0-9]+$'; do
    [ $((SECONDS - start)) -lt "$TIMEOUT" ] || fail "the analyzer ran no micro-batch after ${TIMEOUT} s"
    sleep 2
  done
}

monitoring_status() {  # from inside the stack: `analyzer-up` if Prometheus scrapes the analyzer,
  # and `incident KIND ENTITY` for each incident of the truth file with an alert in Alertmanager
  dc exec -T alert-notifier python -c 'import json, urllib.parse, urllib.request
def get(url):
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.load(answer)
query = urllib.parse.urlencode({"query": "up{job=\"chaussettes-analyzer\"} == 1"})
if get("http://prometheus:9090/api/v1/query?" + query)["data"]["result"]:
    print("analyzer-up")
held = {(a["labels"].get("scope"), a["labels"].get("entity")) for a in get("http://alertmanager:9093/api/v2/alerts")
        if a["labels"].get("service") == "chaussettes"}
for line in open(".state/truth.jsonl"):
    incident = json.loads(line)
    if (incident["kind"], incident["entity"]) in held:
        print("incident", incident["kind"], incident["entity"])'
}

trap finish EXIT

[ -s .secrets/spark-authenticate.secret ] || make --no-print-directory secret
mkdir -p "$LOGS"
dc --profile check down -v --remove-orphans > /dev/null 2>&1
say "phase 1: up --build from a clean state"
dc up --build --detach --quiet-pull 2>&1 | tail -n 3
wait_healthy analyzer
say "analyzer healthy ($(analyzer_status)); waiting for the generator's incidents"
# Alertmanager keeps an alert until it resolves: polled while the incidents happen.
: > "$LOGS/monitoring.txt"
( while :; do monitoring_status >> "$LOGS/monitoring.txt" 2>/dev/null || true; sleep 5; done ) &
poller=$!
dc --profile check run --rm --no-deps check || { kill $poller; fail "alerts do not match the incidents"; }
kill $poller
grep -q '^analyzer-up$' "$LOGS/monitoring.txt" || fail "Prometheus never scraped the analyzer (up == 1)"
held=$(grep '^incident ' "$LOGS/monitoring.txt" | sort -u | wc -l)
incidents=$(dc exec -T analyzer cat .state/truth.jsonl | wc -l)
[ "$held" -eq "$incidents" ] || fail "Alertmanager held alerts of $held incident(s) out of $incidents"
say "monitoring: Prometheus scrapes the analyzer; Alertmanager held the alerts of the $held incidents"
wait_healthy dashboard
dashboard=$(dc exec -T dashboard python -c 'import json, sys, urllib.request
state = json.load(urllib.request.urlopen("http://127.0.0.1:8080/api/state", timeout=10))
print("%d windows, %d alerts" % (len(state["chart"]["x"]), len(state["alerts"])))
sys.exit(0 if state["chart"]["x"] and state["alerts"] else 1)') || fail "the dashboard shows no traffic or no alert: $dashboard"
say "dashboard: $dashboard"
dc logs --no-color --timestamps > "$LOGS/phase1.log" 2>&1

say "phase 2: down, then up on the same volumes"
dc down 2>&1 | tail -n 1
dc up --detach 2>&1 | tail -n 3
wait_healthy analyzer
# Healthy = queries started; the generator starts after that, and the first batches follow.
wait_batches
first=$(analyzer_status)
say "analyzer resumed: $first (query:batch:lines)"
case " $first" in *" alerts:0:"*|*" dead-letters:0:"*) fail "a query started again from batch 0: checkpoint lost" ;; esac
start=$SECONDS
until analyzer_status | grep -Eq 'alerts:[0-9]+:[1-9]'; do
  [ $((SECONDS - start)) -lt "$TIMEOUT" ] || fail "the analyzer read no new line after the restart"
  sleep 2
done
say "analyzer reads new lines: $(analyzer_status)"
dc logs --no-color --timestamps > "$LOGS/phase2.log" 2>&1
if grep -Ei 'offset was changed|data may have been lost|OffsetOutOfRange' "$LOGS/phase2.log"; then
  fail "the analyzer reset offsets or lost data after down + up"
fi
say "PASSED: incidents alerted and in Alertmanager, no false alert, analyzer scraped, resumed without offset reset or data loss"
