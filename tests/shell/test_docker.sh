#!/usr/bin/env bash
# docker/ cannot drift from the binary: the runtime stage of docker/Dockerfile
# installs exactly the Debian packages of the libraries build/release/sluice
# links directly (its NEEDED entries, resolved by ldd, owned per dpkg -S),
# and every other library ldd shows comes with those packages' dependencies
# (or is in every Debian image). docker/compose.yml is valid for
# `docker-compose config` (when docker-compose is installed; no Docker engine
# is needed) and keeps a password out of the repository. Prints TAP lines
# for tests/run; the ldd checks skip without the release build.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
sluice="$here/build/release/sluice"
dockerfile="$here/docker/Dockerfile"
compose="$here/docker/compose.yml"
n=0
check() { # check NAME CONDITION-EXIT-STATUS [why]
    n=$((n + 1))
    if [ "$2" -eq 0 ]; then echo "ok $n - $1"; else echo "not ok $n - $1${3:+ ($3)}"; fi
}
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }

# The packages the last stage installs: the words after
# --no-install-recommends up to the next &&.
image_packages() {
    awk '/^FROM /{stage=""} {stage = stage $0 "\n"} END{printf "%s", stage}' "$dockerfile" |
        sed 's/\\$//' | tr '\n' ' ' |
        sed -n 's/.*--no-install-recommends\(.*\)/\1/p' | sed 's/&&.*//' | tr -s ' ' '\n' | sed '/^$/d' | sort -u
}
package_of() { # the Debian package owning a library path (symlinks resolved)
    { dpkg -S "$(readlink -f "$1")" 2>/dev/null || dpkg -S "$1" 2>/dev/null; } | head -n 1 | cut -d: -f1
}
# Every package the given ones depend on, recursively (installed ones only).
closure() {
    local todo=("$@") seen=" " p deps
    while [ ${#todo[@]} -gt 0 ]; do
        p=${todo[0]}
        todo=("${todo[@]:1}")
        case "$seen" in *" $p "*) continue ;; esac
        seen+="$p "
        echo "$p"
        deps=$(dpkg-query -W -f='${Depends},${Pre-Depends}' "$p" 2>/dev/null |
            tr ',|' '\n\n' | sed 's/([^)]*)//; s/:any//; s/^ *//; s/ *$//' | sed '/^$/d')
        # shellcheck disable=SC2206
        todo+=($deps)
    done
}

if [ -x "$sluice" ] && command -v dpkg >/dev/null; then
    ldd_out=$(ldd "$sluice")
    needed=$(readelf -d "$sluice" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    direct=$(for lib in $needed; do
        path=$(awk -v l="$lib" '$1 == l && $2 == "=>" {print $3}' <<<"$ldd_out")
        [ -n "$path" ] && package_of "$path"
    done | grep -vx libc6 | sort -u)
    all=$(awk '$2 == "=>" {print $3}' <<<"$ldd_out" | while read -r path; do package_of "$path"; done | sort -u)
    listed=$(image_packages | grep -vxE 'curl|ca-certificates')
    unresolved=$(awk '$2 == "=>" && $3 == "not" {print $1}' <<<"$ldd_out")
    check ldd_resolves_every_library_to_a_debian_package \
        "$([ -z "$unresolved" ] && [ -n "$direct" ]; echo $?)" "unresolved: $unresolved"
    missing=$(comm -23 <(echo "$direct") <(echo "$listed") | tr '\n' ' ')
    extra=$(comm -13 <(echo "$direct") <(echo "$listed") | tr '\n' ' ')
    check dockerfile_installs_every_library_sluice_links "$([ -z "$missing" ]; echo $?)" \
        "add to docker/Dockerfile: $missing"
    check dockerfile_installs_no_library_sluice_does_not_link "$([ -z "$extra" ]; echo $?)" \
        "not linked any more: $extra"
    # The rest of ldd's list arrives with the listed packages (or with the
    # base image: libc6 and what is Essential or Priority required).
    covered=$( (closure $listed libc6; dpkg-query -W -f='${Package} ${Essential} ${Priority}\n' |
        awk '$2 == "yes" || $3 == "required" {print $1}' | sed 's/:.*//') | sort -u)
    uncovered=$(comm -23 <(echo "$all") <(echo "$covered") | tr '\n' ' ')
    check every_library_ldd_shows_comes_with_the_image_packages "$([ -z "$uncovered" ]; echo $?)" \
        "not pulled in: $uncovered"
else
    skip "the ldd checks need the release build (make VARIANT=release all) and dpkg"
fi

# No password in docker/: the compose file takes it from the environment
# (a YAML value that is not a ${...} reference, or a DSN with user:password@).
secrets_in_repo=$(sed 's/#.*//' "$compose" "$here/docker/Dockerfile" |
    grep -nE '^[[:space:]]*[A-Za-z_]*PASSWORD[A-Za-z_]*[:=][[:space:]]*[^$[:space:]]|postgres(ql)?://[^@/[:space:]]*:[^@/[:space:]]*@')
check docker_files_hold_no_password "$([ -z "$secrets_in_repo" ]; echo $?)" "$secrets_in_repo"

if command -v docker-compose >/dev/null; then
    out=$(cd "$here" && POSTGRES_PASSWORD=not-a-secret docker-compose -f "$compose" config 2>&1)
    check compose_file_is_valid "$?" "$(head -n 3 <<<"$out" | tr '\n' ' ')"
    check compose_advertises_each_instance_by_its_service_name \
        "$(grep -c 'SLUICE_GATEWAY_ADVERTISED_ADDRESS: sluice-[123]:8080' <<<"$out" | grep -qx 3; echo $?)"
    check compose_gives_every_instance_the_signing_key_secret \
        "$([ "$(grep -c 'SLUICE_IDENTITY_KEY_FILE: /run/secrets/token-signing-key' <<<"$out")" = 3 ] &&
            [ "$(grep -c 'source: token-signing-key' <<<"$out")" = 3 ]; echo $?)"
    check compose_gives_every_instance_the_cluster_secret \
        "$([ "$(grep -c 'SLUICE_CLUSTER_SECRET_FILE: /run/secrets/cluster-secret' <<<"$out")" -ge 3 ] &&
            [ "$(grep -c 'source: cluster-secret' <<<"$out")" -ge 3 ]; echo $?)"
    check compose_runs_the_sink_with_a_dsn \
        "$(awk '/^  [a-z]/{block = $1} block == "sink:"' <<<"$out" | grep -qE '^ +command:|^ +- sink$' &&
            awk '/^  [a-z]/{block = $1} block == "sink:"' <<<"$out" | grep -q 'SLUICE_PG_DSN: postgresql://'; echo $?)"
    check compose_health_checks_instances_on_readyz \
        "$([ "$(grep -c 'http://127.0.0.1:8080/readyz' <<<"$out")" = 3 ]; echo $?)"
    out=$(cd "$here" && env -u POSTGRES_PASSWORD docker-compose -f "$compose" config 2>&1)
    check compose_refuses_to_run_without_a_postgres_password \
        "$([ $? -ne 0 ] && grep -q POSTGRES_PASSWORD <<<"$out"; echo $?)" "$(head -n 2 <<<"$out")"
else
    skip "docker-compose is not installed (apt-get install docker-compose to validate docker/compose.yml)"
fi
