#!/usr/bin/env bash
# The harness itself: it hands over the exit status, starts nothing it was
# given, and leaves no broker, Postgres or temp dir behind, also when it is
# terminated. Prints TAP lines for tests/run. Starts its own (nested) broker
# and Postgres on other free ports, so it runs inside or outside a harness.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
harness="$here/scripts/harness"
n=0
check() { # check NAME CONDITION-EXIT-STATUS [why]
    n=$((n + 1))
    if [ "$2" -eq 0 ]; then echo "ok $n - $1"; else echo "not ok $n - $1${3:+ ($3)}"; fi
}
gone() { # gone DIR PORT: the dir is removed and nothing answers on PORT
    [ ! -e "$1" ] && ! (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null
}
port_of() { sed -n 's/.*:\([0-9]*\)$/\1/p' <<<"$1"; }

if ! [ -f "$here/.cache/kafka/$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/scripts/kafka-pom.xml")/.complete" ]; then
    echo "ok 1 # SKIP harness tests need 'scripts/bootstrap test'"
    exit 0
fi

# 1. exit status passes through; everything is cleaned up after a failure.
info=$(mktemp)
env -u SLUICE_TEST_KAFKA_BOOTSTRAP -u SLUICE_TEST_PG_DSN "$harness" \
    bash -c 'echo "$SLUICE_TEST_HARNESS_DIR $SLUICE_TEST_KAFKA_BOOTSTRAP $SLUICE_TEST_PG_DSN" >"$0"; exit 3' \
    "$info" 2>/dev/null
rc=$?
read -r dir kafka dsn <"$info"
pg_port=$(sed -n 's|.*:\([0-9]*\)/.*|\1|p' <<<"$dsn")
check harness_returns_the_command_status "$([ "$rc" -eq 3 ]; echo $?)" "rc=$rc"
check harness_cleans_up_after_a_failing_command \
    "$(gone "$dir" "$(port_of "$kafka")" && gone "$dir" "$pg_port"; echo $?)" "$dir"

# 2. SIGTERM during the run: same cleanup, status 143.
: >"$info"
env -u SLUICE_TEST_KAFKA_BOOTSTRAP -u SLUICE_TEST_PG_DSN "$harness" \
    bash -c 'echo "$SLUICE_TEST_HARNESS_DIR $SLUICE_TEST_KAFKA_BOOTSTRAP $SLUICE_TEST_PG_DSN" >"$0"; sleep 120' \
    "$info" 2>/dev/null &
pid=$!
for _ in $(seq 1 600); do [ -s "$info" ] && break; sleep 0.1; done
kill -TERM "$pid"
wait "$pid"
rc=$?
read -r dir kafka dsn <"$info"
pg_port=$(sed -n 's|.*:\([0-9]*\)/.*|\1|p' <<<"$dsn")
check harness_stops_on_sigterm_with_status_143 "$([ "$rc" -eq 143 ]; echo $?)" "rc=$rc"
check harness_cleans_up_after_sigterm \
    "$(gone "$dir" "$(port_of "$kafka")" && gone "$dir" "$pg_port"; echo $?)" "$dir"

# 3. Services given in the environment are used, not started.
out=$(SLUICE_TEST_KAFKA_BOOTSTRAP=127.0.0.1:1 SLUICE_TEST_PG_DSN=postgresql://x@127.0.0.1:1/x \
    "$harness" bash -c 'echo "$SLUICE_TEST_KAFKA_BOOTSTRAP $SLUICE_TEST_PG_DSN"' 2>/dev/null)
check harness_uses_services_given_in_the_environment \
    "$([ "$out" = "127.0.0.1:1 postgresql://x@127.0.0.1:1/x" ]; echo $?)" "$out"
rm -f "$info"
