#!/usr/bin/env bash
# `make compose-ha-test`: the stack on three Kafka brokers (docker-compose.ha.yml) loses a broker,
# then its active controller, each for 60 s, under load. Needs Docker with Compose v2 only.
#   1. from a clean state (own project name), up --build without the demo's generator; the topics
#      are replicated 3 times with min.insync.replicas 2;
#   2. a generator at 200 lines/s with --acks all (idempotent), an ip incident during the first
#      outage, its per-record delivery counts in --stats-file;
#   3. kafka-2 killed (SIGKILL) for 60 s, restarted; once every partition is in sync again, the
#      active controller (asked to the quorum) killed for 60 s, restarted;
#   4. proved: lines sent = acknowledged = in http-logs (the end offsets: idempotence writes none
#      twice); the analyzer never stopped (no restart, its query active, no error); the incident
#      alerted; no partition under-replicated at the end. Printed: the time to be back in sync
#      after each restart, and the longest pause between the analyzer's alerts batches;
#   5. down -v, also on failure. Every container's log: .state/compose-ha-test/last.log
# Env: KAFKA_HOST_PORT (default 29095), HA_RATE (200), HA_OUTAGE_S (60), COMPOSE_TEST_TIMEOUT (600).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=finale/compose_lib.sh
source finale/compose_lib.sh

NAME=compose-ha-test
export COMPOSE_PROJECT_NAME=chaussettes-ha-test
export KAFKA_HOST_PORT=${KAFKA_HOST_PORT:-29095}
TIMEOUT=${COMPOSE_TEST_TIMEOUT:-600}
RATE=${HA_RATE:-200}
OUTAGE=${HA_OUTAGE_S:-60}
DURATION=$((4 * OUTAGE + 60))
LOGS=.state/compose-ha-test
BOOTSTRAP=kafka:19092,kafka-2:19092,kafka-3:19092
dc() { docker compose -f docker-compose.yml -f docker-compose.ha.yml "$@"; }
py() { dc exec -T analyzer python -c "$1"; }  # Python with kafka-python, inside the network


logs_end() {  # sum of the end offsets of http-logs
  py "from kafka import KafkaConsumer, TopicPartition
c = KafkaConsumer(bootstrap_servers='$BOOTSTRAP')
p = [TopicPartition('http-logs', i) for i in c.partitions_for_topic('http-logs')]
print(sum(c.end_offsets(p).values()))"
}

under_replicated() {  # the partitions not fully in sync, asked to a broker that is up ($1)
  dc exec -T "$1" /opt/kafka/bin/kafka-topics.sh --bootstrap-server "$1:19092" --describe \
    --under-replicated-partitions 2>/dev/null | grep -c Partition || true
}

wait_in_sync() {  # $1: a broker that is up; prints the seconds it took
  local start=$SECONDS
  until [ "$(under_replicated "$1")" = 0 ]; do
    [ $((SECONDS - start)) -lt "$TIMEOUT" ] || fail "partitions still under-replicated after ${TIMEOUT} s"
    sleep 1
  done
  echo $((SECONDS - start))
}

active_controller() {  # the service of the quorum's leader, asked to $1
  local leader
  leader=$(dc exec -T "$1" bash -c "java -cp '/opt/kafka/libs/*' org.apache.kafka.tools.MetadataQuorumCommand --bootstrap-server $1:19092 describe --status 2>/dev/null" | awk '/^LeaderId:/ {print $2}')
  case "$leader" in 1) echo kafka ;; 2) echo kafka-2 ;; 3) echo kafka-3 ;; *) fail "no quorum leader ($leader)" ;; esac
}

outage() {  # service: killed (SIGKILL) for OUTAGE seconds, started again
  say "kill -9 $1 for $OUTAGE s (lines in http-logs: $(logs_end))"
  dc kill -s SIGKILL "$1" > /dev/null 2>&1
  sleep "$OUTAGE"  # the outage itself: its length is the fault being injected
  dc start "$1" > /dev/null 2>&1
  say "$1 started again (lines in http-logs: $(logs_end))"
}

cleanup() {  # the load generator, run outside compose up
  docker rm -f "$COMPOSE_PROJECT_NAME-load" > /dev/null 2>&1 || true
}
trap finish EXIT

[ -s .secrets/spark-authenticate.secret ] || make --no-print-directory secret
mkdir -p "$LOGS"
dc --profile check down -v --remove-orphans > /dev/null 2>&1
say "up --build: three brokers, the analyzer, no demo generator"
dc up --build --detach --quiet-pull kafka kafka-2 kafka-3 topics thresholds analyzer viewer 2>&1 | tail -n 2
wait_healthy analyzer
# Its first line (no `| head`: with pipefail, the writer killed by SIGPIPE would fail the script).
described=$(dc exec -T kafka /opt/kafka/bin/kafka-topics.sh --bootstrap-server kafka:19092 --describe --topic http-logs)
described=${described%%$'\n'*}
say "http-logs: $described"
case "$described" in *"ReplicationFactor: 3"*"min.insync.replicas=2"*) ;; *) fail "http-logs is not replicated 3 times with min.insync.replicas 2" ;; esac

start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
say "generator: $RATE lines/s for $DURATION s, --acks all, ip incident at +30 s for 60 s"
dc run --detach --no-deps --name "$COMPOSE_PROJECT_NAME-load" generator \
  python finale/log_generator.py --bootstrap-servers "$BOOTSTRAP" --rate "$RATE" \
  --duration "$DURATION" --acks all --seed 11 --start-time "$start" --incident ip@30+60 \
  --stats-file .state/ha-stats.json --truth .state/ha-truth.jsonl > /dev/null
begin=$SECONDS
until [ "$(logs_end)" -ge $((20 * RATE)) ]; do
  [ "$(docker inspect --format '{{.State.Running}}' "$COMPOSE_PROJECT_NAME-load")" = true ] \
    || fail "the generator stopped: $(docker logs "$COMPOSE_PROJECT_NAME-load" 2>&1 | tail -n 2)"
  [ $((SECONDS - begin)) -lt "$TIMEOUT" ] || fail "the generator's lines do not reach http-logs"
  sleep 1
done

outage kafka-2
sync1=$(wait_in_sync kafka)
say "in sync again $sync1 s after kafka-2's restart"
controller=$(active_controller kafka-2)
witness=kafka; [ "$controller" = kafka ] && witness=kafka-2
outage "$controller"
sync2=$(wait_in_sync "$witness")
say "in sync again $sync2 s after the controller's ($controller) restart"

code=$(docker wait "$COMPOSE_PROJECT_NAME-load")
docker logs "$COMPOSE_PROJECT_NAME-load" > "$LOGS/generator.log" 2>&1 || true
docker rm "$COMPOSE_PROJECT_NAME-load" > /dev/null
[ "$code" = 0 ] || fail "the generator exited $code: $(tail -n 3 "$LOGS/generator.log")"

verdict=$(py "import json
from kafka import KafkaConsumer, TopicPartition
stats = json.load(open('.state/ha-stats.json'))
c = KafkaConsumer(bootstrap_servers='$BOOTSTRAP')
p = [TopicPartition('http-logs', i) for i in c.partitions_for_topic('http-logs')]
in_topic = sum(c.end_offsets(p).values())
print(stats['lines_sent'], stats['lines_acknowledged'], in_topic, stats['lines_failed'], stats['lines_unknown'])")
read -r sent acked in_topic failed unknown <<< "$verdict"
say "lines sent $sent, acknowledged $acked, in http-logs $in_topic (failed $failed, unknown $unknown)"
[ "$sent" = $((RATE * DURATION)) ] && [ "$acked" = "$sent" ] && [ "$in_topic" = "$sent" ] \
  || fail "sent, acknowledged and in the topic differ"

restarts=$(docker inspect --format '{{.RestartCount}} {{.State.Running}}' "$(dc ps -q analyzer)")
query=$(dc exec -T analyzer python -c 'import json
q = json.load(open("/tmp/analyzer-status.json"))["queries"]["alerts"]
print(q.get("active"), q.get("error"))')
say "analyzer: restarts and running: $restarts; alerts query active and error: $query"
[ "$restarts" = "0 true" ] && [ "$query" = "True None" ] || fail "the analyzer stopped"

incident=$(py "import json
from kafka import KafkaConsumer
truth = [json.loads(line) for line in open('.state/ha-truth.jsonl')]
entity = truth[0]['entity']
c = KafkaConsumer('alerts', bootstrap_servers='$BOOTSTRAP', auto_offset_reset='earliest', consumer_timeout_ms=5000)
found = [json.loads(r.value) for r in c]
hits = [a for a in found if a['entity_type'] == 'ip' and a['entity'] == entity]
print(entity, len(hits), min((a['window_start'] for a in hits), default='-'))")
say "incident ip (entity, alerts, first window): $incident"
case "$incident" in *" 0 "*) fail "no alert on the incident during the outage" ;; esac

# The longest pause between two alerts micro-batches of the analyzer (its status lines).
pause=$(dc logs --no-color --timestamps analyzer | python3 -c 'import re, sys
from datetime import datetime
times = [datetime.fromisoformat(m[1][:26]) for line in sys.stdin
         if (m := re.search(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z? .* alerts batch \d+:", line))]
gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
print("%.1f s over %d batches" % (max(gaps, default=0), len(times)))')
remaining=$(under_replicated kafka)
say "longest pause between alerts batches: $pause; under-replicated partitions now: $remaining"
[ "$remaining" = 0 ] || fail "partitions still under-replicated"
say "PASSED: a broker and the controller lost for ${OUTAGE} s each: sent = acknowledged = in the topic, the analyzer never stopped, the incident alerted, back in sync in ${sync1} s and ${sync2} s"
