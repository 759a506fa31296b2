#!/usr/bin/env bash
# The harness itself: it hands over the exit status, starts nothing it was
# given, and leaves no broker, Postgres or temp dir behind, also when it is
# terminated and also when a test restarted the broker with
# scripts/harness-broker (which must bring it back on the same port). Prints TAP lines for tests/run. Starts its own (nested) broker
# and Postgres on other free ports, so it runs inside or outside a harness.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
harness="$here/scripts/harness"
bounce="$here/scripts/harness-broker"
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
# On the way, the broker is stopped (SIGTERM) and started again: it must be
# down in between and answer on the same port after.
info=$(mktemp)
env -u SLUICE_TEST_KAFKA_BOOTSTRAP -u SLUICE_TEST_PG_DSN "$harness" \
    bash -c 'b=$SLUICE_TEST_KAFKA_BOOTSTRAP
        "$1" stop && ! timeout 5 kcat -b "$b" -L -m 2 >/dev/null 2>&1 && "$1" start &&
            timeout 5 kcat -b "$b" -L -m 3 >/dev/null 2>&1 && bounced=yes
        echo "$SLUICE_TEST_HARNESS_DIR $b $SLUICE_TEST_PG_DSN ${bounced:-no}" >"$0"; exit 3' \
    "$info" "$bounce" 2>/dev/null
rc=$?
read -r dir kafka dsn bounced <"$info"
pg_port=$(sed -n 's|.*:\([0-9]*\)/.*|\1|p' <<<"$dsn")
check harness_returns_the_command_status "$([ "$rc" -eq 3 ]; echo $?)" "rc=$rc"
check harness_broker_stops_and_starts_again_on_the_same_port "$([ "$bounced" = yes ]; echo $?)"
check harness_cleans_up_after_a_failing_command \
    "$(gone "$dir" "$(port_of "$kafka")" && gone "$dir" "$pg_port"; echo $?)" "$dir"

# 2. SIGTERM during the run: same cleanup, status 143. The broker running
# then was killed -9 and restarted by scripts/harness-broker, so it is not
# the harness's child: the cleanup must stop it all the same.
: >"$info"
env -u SLUICE_TEST_KAFKA_BOOTSTRAP -u SLUICE_TEST_PG_DSN "$harness" \
    bash -c '"$1" kill && "$1" start
        echo "$SLUICE_TEST_HARNESS_DIR $SLUICE_TEST_KAFKA_BOOTSTRAP $SLUICE_TEST_PG_DSN $("$1" pid)" >"$0"; sleep 120' \
    "$info" "$bounce" 2>/dev/null &
pid=$!
for _ in $(seq 1 1200); do [ -s "$info" ] && break; sleep 0.1; done
kill -TERM "$pid"
wait "$pid"
rc=$?
read -r dir kafka dsn broker_pid <"$info"
pg_port=$(sed -n 's|.*:\([0-9]*\)/.*|\1|p' <<<"$dsn")
check harness_stops_on_sigterm_with_status_143 "$([ "$rc" -eq 143 ]; echo $?)" "rc=$rc"
check harness_cleans_up_after_sigterm \
    "$(gone "$dir" "$(port_of "$kafka")" && gone "$dir" "$pg_port"; echo $?)" "$dir"
check harness_stops_a_broker_restarted_by_harness_broker \
    "$([ -n "$broker_pid" ] && ! kill -0 "$broker_pid" 2>/dev/null; echo $?)" "pid ${broker_pid:-none}"

# 3. Services given in the environment are used, not started; such a broker
# cannot be bounced (harness-broker says so with status 3).
out=$(SLUICE_TEST_KAFKA_BOOTSTRAP=127.0.0.1:1 SLUICE_TEST_PG_DSN=postgresql://x@127.0.0.1:1/x \
    "$harness" bash -c 'echo "$SLUICE_TEST_KAFKA_BOOTSTRAP $SLUICE_TEST_PG_DSN"; "$0" stop; echo "status $?"' \
    "$bounce" 2>/dev/null)
check harness_uses_services_given_in_the_environment \
    "$([ "$(head -n 1 <<<"$out")" = "127.0.0.1:1 postgresql://x@127.0.0.1:1/x" ]; echo $?)" "$out"
check harness_broker_refuses_a_broker_it_did_not_start \
    "$([ "$(tail -n 1 <<<"$out")" = "status 3" ]; echo $?)" "$out"
rm -f "$info"
