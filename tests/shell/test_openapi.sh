#!/usr/bin/env bash
# schemas/openapi.yaml, as the Makefile compiles it into sluice (converted by
# scripts/openapi-json): valid OpenAPI 3 by openapi-spec-validator (a
# doctored copy is not, so the validator does run), and it keeps every path
# and method of the public spec that sluice implements
# (../shared/otus-openapi.json; all but GET /user/search). Whether it matches
# the routes the server registers is tests/integration/test_openapi.c's job.
# Prints TAP lines for tests/run; a check whose tool is missing is skipped
# with the reason.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
n=0
check() { # check NAME CONDITION-EXIT-STATUS [why]
    n=$((n + 1))
    if [ "$2" -eq 0 ]; then echo "ok $n - $1"; else echo "not ok $n - $1${3:+ ($3)}"; fi
}
skip() { # skip NAME WHY
    n=$((n + 1))
    echo "ok $n # SKIP $1: $2"
}
# The first of these pythons that can import $1.
python_with() {
    local p
    for p in "$here/.cache/python/bin/python3" python3 /usr/bin/python3; do
        "$p" -c "import $1" >/dev/null 2>&1 && { echo "$p"; return 0; }
    done
    return 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
json="$work/openapi.json"

# (a) the YAML converts (as the build does; PyYAML is a build dependency).
if ! yaml_python=$(python_with yaml); then
    check document_converts_to_json 1 "no python3 with PyYAML: run scripts/bootstrap build"
    exit 0
fi
out=$("$yaml_python" "$here/scripts/openapi-json" "$here/schemas/openapi.yaml" "$json" 2>&1)
check document_converts_to_json $? "$out"
[ -s "$json" ] || exit 0

# (b) valid OpenAPI, and (c) a document without `info` is not.
if validator=$(python_with openapi_spec_validator); then
    validate() {
        "$validator" - "$1" <<'PY' 2>&1
import json, sys
from openapi_spec_validator import validate
with open(sys.argv[1], encoding="utf-8") as f:
    validate(json.load(f))
PY
    }
    out=$(validate "$json")
    check document_is_valid_openapi $? "$(tail -n 3 <<<"$out" | tr '\n' ' ')"
    "$yaml_python" -c 'import json, sys; d = json.load(open(sys.argv[1])); del d["info"];
json.dump(d, open(sys.argv[2], "w"))' "$json" "$work/doctored.json"
    validate "$work/doctored.json" >/dev/null
    check a_document_without_info_is_refused "$([ $? -ne 0 ]; echo $?)" "the validator accepted it"
else
    why="openapi-spec-validator is not installed (scripts/bootstrap test installs it into .cache/python)"
    skip document_is_valid_openapi "$why"
    skip a_document_without_info_is_refused "$why"
fi

# (d) every path + method of the public spec we implement is in ours.
otus="$here/../shared/otus-openapi.json"
if [ -f "$otus" ]; then
    out=$("$yaml_python" - "$otus" "$json" <<'PY' 2>&1
import json, sys
methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
not_implemented = {("/user/search", "get")}
def ops(path):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    return {(p, m) for p, item in doc["paths"].items() for m in item if m in methods}
missing = sorted(ops(sys.argv[1]) - not_implemented - ops(sys.argv[2]))
for p, m in missing:
    print(f"{m.upper()} {p}")
sys.exit(1 if missing else 0)
PY
)
    check public_spec_paths_are_kept $? "missing: $(tr '\n' ' ' <<<"$out")"
else
    skip public_spec_paths_are_kept "no ../shared/otus-openapi.json beside the repository"
fi
