# What the compose tests share (sourced by finale/compose_*test.sh). The caller sets NAME (its
# make target), LOGS (its log folder), TIMEOUT (seconds per wait) and defines dc() (docker compose
# with its files and profiles); `trap finish EXIT` then saves every container's log and removes
# the stack, also on failure.
say() { echo "$NAME: $(date -u +%H:%M:%S) $*"; }
fail() { say "FAILED: $*"; exit 1; }

wait_healthy() {  # service: until its container reports healthy
  local id status start=$SECONDS
  while :; do
    id=$(dc ps -q "$1")
    status=$( [ -n "$id" ] && docker inspect --format '{{.State.Health.Status}}' "$id" || echo none)
    [ "$status" = healthy ] && return 0
    [ $((SECONDS - start)) -lt "$TIMEOUT" ] || fail "$1 not healthy after ${TIMEOUT} s (status: $status)"
    sleep 2
  done
}

finish() {
  local code=$?
  mkdir -p "$LOGS"
  [ "$(type -t cleanup)" = function ] && cleanup
  dc --profile check logs --no-color --timestamps > "$LOGS/last.log" 2>&1 || true
  dc --profile check down -v --remove-orphans > /dev/null 2>&1 || true
  say "down -v done; exit $code after $SECONDS s (logs: $LOGS/)"
  exit $code
}
