#!/usr/bin/env bash
# Stage 2 demo: `bash complet/demo.sh [DURATION]` starts the log generator (10 users, 2 of them error
# users, 6 error URLs failing 80 % of the time, 20 lines/s) and the Spark analyzer (10 s windows every
# 5 s), shows the analyzer's per-window reports for DURATION seconds (default 60; 0 = until Ctrl-C),
# then stops every process it started. Spark's own log goes to .state/complet/demo/analyzer.log.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${1:-60}"
if ! [[ "$DURATION" =~ ^[0-9]+$ ]]; then
  echo "error: DURATION must be a whole number of seconds (0 = until Ctrl-C), got '$DURATION'" >&2
  exit 2
fi
PY="${PY:-.venv/bin/python}"
if [ ! -x "$PY" ]; then
  echo "error: $PY not found: run 'make setup' first (or set PY=/path/to/python)" >&2
  exit 1
fi
LOG_DIR=.state/complet/demo
mkdir -p "$LOG_DIR"
# A free port rather than 9999, so the demo never collides with a generator already running.
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

pids=()
cleanup() {
  trap - EXIT INT TERM
  # Each process leads its own process group (setsid): the analyzer first gets SIGINT, its clean stop
  # (queries, then Spark); then whatever is left of each group (the JVM included) is killed.
  if [ -n "${analyzer_pid:-}" ] && kill -0 "$analyzer_pid" 2>/dev/null; then
    echo "stopping the analyzer..."
    kill -INT "$analyzer_pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$analyzer_pid" 2>/dev/null || break; sleep 0.5; done
  fi
  for pid in "${pids[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  sleep 1
  for pid in "${pids[@]}"; do
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  echo "demo stopped; logs in $LOG_DIR/"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

setsid "$PY" complet/log_generator.py --port "$PORT" --rate 20 --users 10 --error-users 20 \
  --error-urls 20 --error-rate 80 >/dev/null 2>"$LOG_DIR/generator.log" &
pids+=("$!")
for _ in $(seq 100); do
  grep -q "^listening on" "$LOG_DIR/generator.log" 2>/dev/null && break
  sleep 0.1
done
if ! grep -q "^listening on" "$LOG_DIR/generator.log"; then
  echo "error: the log generator did not start:" >&2
  cat "$LOG_DIR/generator.log" >&2
  exit 1
fi
echo "generator: $(head -1 "$LOG_DIR/generator.log")"

setsid "$PY" complet/spark_streaming_analyzer.py --port "$PORT" --window "10 seconds" --slide "5 seconds" \
  --watermark "2 seconds" 2>"$LOG_DIR/analyzer.log" &
analyzer_pid=$!
pids+=("$analyzer_pid")
if [ "$DURATION" -eq 0 ]; then
  echo "analyzer started (Spark takes ~15 s to start; first window after ~30 s); Ctrl-C to stop"
else
  echo "analyzer started (Spark takes ~15 s to start; first window after ~30 s); running ${DURATION} s"
fi

deadline=$((SECONDS + DURATION))
while kill -0 "$analyzer_pid" 2>/dev/null; do
  if [ "$DURATION" -ne 0 ] && [ "$SECONDS" -ge "$deadline" ]; then
    exit 0
  fi
  sleep 1
done
status=0
wait "$analyzer_pid" || status=$?
echo "error: the analyzer stopped by itself (exit $status); the end of $LOG_DIR/analyzer.log:" >&2
tail -5 "$LOG_DIR/analyzer.log" >&2
exit 1
