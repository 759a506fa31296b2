#!/usr/bin/env bash
# The include-rule checker (scripts/check-includes) on a tiny fake tree: it
# passes includes that point one way and fails, naming the file and the line,
# on each include that breaks the rule. Prints TAP lines for tests/run.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
checker="$here/scripts/check-includes"
n=0
check() { # check NAME CONDITION-EXIT-STATUS [why]
    n=$((n + 1))
    if [ "$2" -eq 0 ]; then echo "ok $n - $1"; else echo "not ok $n - $1${3:+ ($3)}"; fi
}

tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree"/processor/{base,http,engine} "$tree"/state "$tree"/topology/identity \
    "$tree"/connectors/http
for header in processor/base/error.h processor/http/server.h processor/engine/engine.h \
    processor/topology.h state/store.h topology/identity/identity.h \
    connectors/http/identity_requests.h; do
    echo "/* $header */" >"$tree/$header"
done
printf '/* clean */\n#include <stdio.h>\n#include "processor/base/error.h"\n' \
    >"$tree/processor/base/error.c"
printf '#include "processor/base/error.h"\n#include "sluice/v1/identity.pb-c.h"\n' \
    >"$tree/topology/identity/identity.c"
printf '#include "processor/topology.h"\n#include "topology/identity/identity.h"\n' \
    >>"$tree/topology/identity/identity.c"

# (a) a tree whose includes all point one way passes.
out=$("$checker" "$tree" 2>&1)
rc=$?
check clean_includes_pass "$([ "$rc" -eq 0 ] && [ "$(wc -l <<<"$out")" -eq 1 ]; echo $?)" "rc=$rc: $out"

# (b) state including the engine, (c) the domain including an edge,
# (d) base including http: each named by file and line.
printf '#include "processor/base/error.h"\n#include "processor/engine/engine.h"\n' \
    >"$tree/state/store.c"
printf '\n\n#include "connectors/http/identity_requests.h"\n' >>"$tree/topology/identity/identity.c"
printf '#include "processor/http/server.h"\n' >"$tree/processor/base/log.c"
out=$("$checker" "$tree" 2>&1)
rc=$?
check wrong_includes_fail "$([ "$rc" -eq 1 ]; echo $?)" "rc=$rc"
check state_may_not_include_the_engine \
    "$(grep -qxF 'state/store.c:2: state may not include processor/engine/engine.h (processor/engine)' <<<"$out"; echo $?)" "$out"
check topology_may_not_include_connectors \
    "$(grep -qxF 'topology/identity/identity.c:7: topology may not include connectors/http/identity_requests.h (connectors)' <<<"$out"; echo $?)" "$out"
check base_may_not_include_http \
    "$(grep -qxF 'processor/base/log.c:1: processor/base may not include processor/http/server.h (processor/http)' <<<"$out"; echo $?)" "$out"
check one_line_per_violation "$([ "$(wc -l <<<"$out")" -eq 3 ]; echo $?)" "$out"

# A quoted include that is not a path from the root fails too.
rm "$tree/state/store.c" "$tree/processor/base/log.c"
sed -i '$d' "$tree/topology/identity/identity.c"
printf '#include "error.h"\n' >"$tree/processor/base/clock.c"
out=$("$checker" "$tree" 2>&1)
rc=$?
check relative_include_fails \
    "$([ "$rc" -eq 1 ] && grep -qxF 'processor/base/clock.c:1: processor/base may not include error.h (not a path from the repository root)' <<<"$out"; echo $?)" "$out"

echo "1..$n"
