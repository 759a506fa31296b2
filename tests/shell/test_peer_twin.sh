#!/usr/bin/env bash
# The Kafka Streams twin of `make bench-peer` stays a fair peer: its Java
# source sets no Kafka Streams setting beyond the ones bench/RESULTS.md and
# its README name (so a tuned twin, or a tuned one left undocumented, fails
# here), bench_engine starts its JVM without flags, and Maven's output is
# git-ignored. Reads files only: no Maven, no network, no JVM (building the
# twin may need Maven Central, so no test here compiles it). TAP for tests/run.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
src="$here/bench/peers/kafka-streams/src/main/java/dev/sluice/peer/Counter.java"
driver="$here/bench/bench_engine.c"
n=0
check() { # check NAME CONDITION-EXIT-STATUS [why]
    n=$((n + 1))
    if [ "$2" -eq 0 ]; then echo "ok $n - $1"; else echo "not ok $n - $1${3:+ ($3)}"; fi
}

# (a) the settings: exactly these StreamsConfig constants, nothing else.
allowed="APPLICATION_ID_CONFIG BOOTSTRAP_SERVERS_CONFIG COMMIT_INTERVAL_MS_CONFIG
NUM_STREAM_THREADS_CONFIG PROCESSING_GUARANTEE_CONFIG STATESTORE_CACHE_MAX_BYTES_CONFIG
STATE_DIR_CONFIG"
set_keys=$(grep -oE 'props\.put\([^,]+' "$src" | sed -E 's/props\.put\((StreamsConfig\.)?//' |
    sort -u | tr '\n' ' ')
expected=$(tr ' \n' '\n\n' <<<"$allowed" | grep . | sort -u | tr '\n' ' ')
check twin_sets_only_the_documented_settings \
    "$([ -n "$set_keys" ] && [ "$set_keys" = "$expected" ]; echo $?)" \
    "sets: $set_keys; documented: $expected"

# (b) the guarantee and the commit interval the brief fixes.
check twin_runs_exactly_once_v2_with_100_ms_commits \
    "$(grep -q 'PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2' "$src" &&
        grep -q 'COMMIT_INTERVAL_MS_CONFIG, 100)' "$src"; echo $?)"

# (c) no JVM options in the driver's command line for the twin.
body=$(awk '/^static void twin_args\(/,/^}/' "$driver")
check twin_jvm_starts_without_flags \
    "$([ -n "$body" ] && ! grep -qE 'arg\(a, "-(X|D|server|client|javaagent)' <<<"$body"; echo $?)" \
    "twin_args not found or passes a JVM option"

# (d) Maven's output never gets committed.
if git -C "$here" rev-parse --git-dir >/dev/null 2>&1; then
    check twin_maven_output_is_ignored \
        "$(git -C "$here" check-ignore -q bench/peers/kafka-streams/target/lib/x.jar; echo $?)"
else
    n=$((n + 1))
    echo "ok $n # SKIP twin_maven_output_is_ignored (not a git work tree)"
fi
