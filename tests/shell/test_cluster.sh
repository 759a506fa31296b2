#!/usr/bin/env bash
# scripts/cluster (make cluster) on the harness's broker and Postgres: the
# three instances answer, share one signing key (a user registered on
# instance 1 is read on instance 3; a token issued by a login on instance 2
# verifies on instance 3), and SIGTERM stops every process the cluster
# started and removes its temp dir within a bounded time. Prints TAP lines
# for tests/run; skips without SLUICE_TEST_KAFKA_BOOTSTRAP (not under
# scripts/harness) or without the release build.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
sluice="$here/build/release/sluice"
n=0
check() { # check NAME CONDITION-EXIT-STATUS [why]
    n=$((n + 1))
    if [ "$2" -eq 0 ]; then echo "ok $n - $1"; else echo "not ok $n - $1${3:+ ($3)}"; fi
}
# alive PID: running, not a zombie (a child not yet waited for is one)
alive() { [ -d "/proc/$1" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }

if [ -z "${SLUICE_TEST_KAFKA_BOOTSTRAP:-}" ] || [ -z "${SLUICE_TEST_PG_DSN:-}" ]; then
    echo "ok 1 # SKIP cluster test needs scripts/harness (SLUICE_TEST_KAFKA_BOOTSTRAP)"
    exit 0
fi
if ! [ -x "$sluice" ]; then
    echo "ok 1 # SKIP cluster test needs the release build (make VARIANT=release all)"
    exit 0
fi

out=$(mktemp) err=$(mktemp)
# Its own application.id: tests/run shares the broker with other tests.
"$here/scripts/cluster" --build "$here/build/release" --set log.level=warn \
    --set "application.id=cluster-test-$$" >"$out" 2>"$err" &
cluster=$!
trap 'kill -TERM "$cluster" 2>/dev/null; wait "$cluster" 2>/dev/null; rm -f "$out" "$err"' EXIT

for _ in $(seq 1 900); do
    grep -q '^sink ' "$out" && break
    alive "$cluster" || break
    sleep 0.1
done
mapfile -t urls < <(sed -n 's|^sluice-[1-3] \(http://127\.0\.0\.1:[0-9]*\)$|\1|p' "$out")
check cluster_prints_three_instance_urls_and_the_sink \
    "$([ ${#urls[@]} -eq 3 ] && grep -q '^sink postgresql://' "$out"; echo $?)" \
    "$(tr '\n' ' ' <"$out"; tail -n 5 "$err" | tr '\n' ' ')"
if [ ${#urls[@]} -ne 3 ]; then exit 1; fi
dir=$(sed -n 's|^cluster: logs and state in \([^ ]*\) .*|\1|p' "$err")

# Every process the cluster started: its descendants while it runs.
descendants() {
    local todo=("$1") pid
    while [ ${#todo[@]} -gt 0 ]; do
        pid=${todo[0]}
        todo=("${todo[@]:1}")
        for child in $(ps -o pid= --ppid "$pid"); do echo "$child"; todo+=("$child"); done
    done
}
started=$(descendants "$cluster" | tr '\n' ' ')

# call METHOD URL [BODY] [TOKEN]: prints the body, then the status on a line
call() {
    curl -sS --max-time 10 -X "$1" -H 'Content-Type: application/json' \
        ${4:+-H "Authorization: Bearer $4"} ${3:+--data "$3"} -w '\n%{http_code}' "$2" 2>/dev/null
}
status_of() { tail -n 1 <<<"$1"; }
body_of() { sed '$d' <<<"$1"; }
retry_until_200() { # the same call, for up to 15 s, while it answers 404 or 503
    local a
    for _ in $(seq 1 60); do
        a=$(call "$@")
        case "$(status_of "$a")" in 404 | 503 | 000) sleep 0.25 ;; *) break ;; esac
    done
    echo "$a"
}

email="cluster-$$-$RANDOM@example.org"
password="correct horse battery"
a=$(call POST "${urls[0]}/user/register" \
    "{\"first_name\":\"C\",\"second_name\":\"L\",\"city\":\"X\",\"password\":\"$password\",\"email\":\"$email\"}")
id=$(body_of "$a" | jq -r '.user_id // empty' 2>/dev/null)
check register_on_instance_1 "$([ "$(status_of "$a")" = 200 ] && [ -n "$id" ]; echo $?)" "$a"

a=$(retry_until_200 GET "${urls[2]}/user/get/$id")
check user_registered_on_1_is_read_on_3 \
    "$([ "$(status_of "$a")" = 200 ] && [ "$(body_of "$a" | jq -r .id)" = "$id" ]; echo $?)" "$a"

a=$(retry_until_200 POST "${urls[1]}/login" "{\"email\":\"$email\",\"password\":\"$password\"}")
token=$(body_of "$a" | jq -r '.token // empty' 2>/dev/null)
check login_on_instance_2 "$([ "$(status_of "$a")" = 200 ] && [ -n "$token" ]; echo $?)" "$a"

a=$(call POST "${urls[2]}/auth/introspect" "{\"token\":\"$token\"}" "$token")
check token_from_2_verifies_on_3_with_the_shared_key \
    "$([ "$(status_of "$a")" = 200 ] && [ "$(body_of "$a" | jq -r '.active, .sub' | tr '\n' ' ')" = "true $id " ]; echo $?)" "$a"

# SIGTERM: everything it started is gone within 40 s, its temp dir too.
kill -TERM "$cluster"
for _ in $(seq 1 400); do alive "$cluster" || break; sleep 0.1; done
left=
for pid in $started; do alive "$pid" && left+="$pid "; done
if alive "$cluster"; then left+="cluster($cluster)"; fi
wait "$cluster"
rc=$?
check sigterm_stops_every_process_it_started "$([ -n "$started" ] && [ -z "$left" ]; echo $?)" \
    "started: $started; left: $left"
check sigterm_exits_0_and_removes_the_temp_dir \
    "$([ "$rc" -eq 0 ] && [ -n "$dir" ] && [ ! -e "$dir" ]; echo $?)" "rc=$rc dir=$dir"
