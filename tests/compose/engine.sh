#!/usr/bin/env bash
# engine.sh: set up a Docker-compatible container engine on this Debian 12
# machine (podman behind its Docker API socket), for `make test-compose`.
#
#   eval "$(tests/compose/engine.sh)"     # prints: export DOCKER_HOST=unix:///run/podman/podman.sock
#
# Idempotent: every step checks first and does nothing when already done.
# Quiet: the commands' output goes to $ENGINE_LOG (build/compose-engine.log
# by default) and is printed only when a step fails. On stdout only the
# DOCKER_HOST line (and BASE_IMAGE); progress on stderr. Exits non-zero, with
# the reason on stderr, when the engine cannot be set up here.
#
# What it does (why each step is needed is in docs/compose.md, "Tested here"):
#   1. apt-get install podman runc debootstrap docker-compose
#      golang-github-containernetworking-plugin-dnsname (DNS names on a
#      compose network); the `docker` CLI must already be there.
#   2. /etc/containers/containers.conf: no default ulimits, runc, cgroupfs
#      (crun and the default ulimits are refused in sandboxes like this one).
#   3. A Debian 12 base image, $BASE_IMAGE (localhost/discordbot-base:bookworm-slim),
#      made with debootstrap --variant=minbase from the mirror apt uses, since
#      no image registry can be reached; slimmed as debian:bookworm-slim is
#      (no docs, man pages or locales, also for what apt installs later).
#   4. podman system service on $SOCK, if nothing answers there yet.
#   5. A healthcheck ticker: podman runs HEALTHCHECKs from systemd timers, and
#      there is no systemd here, so without it every container stays
#      "starting" and `depends_on: condition: service_healthy` waits forever.
#      The ticker runs `podman healthcheck run` for each running container
#      with a healthcheck every --interval (tests/compose/healthtick.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ENGINE_LOG=${ENGINE_LOG:-$ROOT/build/compose-engine.log}
SOCK=${PODMAN_SOCK:-/run/podman/podman.sock}
BASE_IMAGE=${BASE_IMAGE:-localhost/discordbot-base:bookworm-slim}
PKGS=(podman runc debootstrap docker-compose golang-github-containernetworking-plugin-dnsname)

mkdir -p "$(dirname "$ENGINE_LOG")"
: >"$ENGINE_LOG"    # this run's log only (the ticker and the service have their own)

note() { printf 'engine: %s\n' "$*" >&2; }
fail() {
    printf 'engine: cannot set up the container engine: %s\n' "$*" >&2
    if [ -s "$ENGINE_LOG" ]; then
        printf 'engine: last lines of %s:\n' "$ENGINE_LOG" >&2
        tail -n 40 "$ENGINE_LOG" >&2
    fi
    exit 1
}
# run CMD... with its output in the log only
logged() {
    printf '\n$ %s\n' "$*" >>"$ENGINE_LOG"
    "$@" >>"$ENGINE_LOG" 2>&1
}

need_root() {
    [ "$(id -u)" = 0 ] || fail "needs root (apt-get, /etc/containers, $SOCK)"
}

install_packages() {
    local missing=() p
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} = 0 ] && return 0
    need_root
    note "installing ${missing[*]} (log: $ENGINE_LOG)"
    export DEBIAN_FRONTEND=noninteractive
    logged apt-get update || fail "apt-get update failed"
    logged apt-get install -y --no-install-recommends "${missing[@]}" ||
        fail "apt-get install ${missing[*]} failed"
}

# The config this sandbox needs; an existing file with other settings is
# left alone unless it lacks these keys (then ours is written beside it and
# the run says so).
write_conf() {
    local conf=/etc/containers/containers.conf want
    want='# written by tests/compose/engine.sh: crun and the default ulimits are
# refused in this sandbox; systemd is not running, so cgroupfs.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
'
    if [ -f "$conf" ] && grep -q 'runtime = "runc"' "$conf" && grep -q 'default_ulimits = \[\]' "$conf" &&
        grep -q 'cgroup_manager = "cgroupfs"' "$conf"; then
        return 0
    fi
    need_root
    if [ -f "$conf" ] && ! grep -q 'written by tests/compose/engine.sh' "$conf"; then
        cp "$conf" "$conf.before-engine-sh"
        note "saved the existing $conf as $conf.before-engine-sh"
    fi
    mkdir -p /etc/containers
    printf '%s' "$want" >"$conf"
    note "wrote $conf"
}

# The Debian mirror apt uses (deb822 sources or sources.list), for debootstrap.
apt_mirror() {
    local m
    m=$(grep -hE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '{print $2}' | grep -E '/debian/?$' | head -n 1) || true
    if [ -z "$m" ]; then
        m=$(grep -hE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            grep -vE 'security|updates' | awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' |
            head -n 1) || true
    fi
    printf '%s' "${m:-http://deb.debian.org/debian}"
}

# The debootstrap tree (a few hundred MB in /var/tmp) goes however the
# script ends: done, failed, a step that set -e stops at, or interrupted.
ROOTFS=""
remove_rootfs() { if [ -n "$ROOTFS" ]; then rm -rf -- "$ROOTFS"; ROOTFS=""; fi; }
trap remove_rootfs EXIT
trap 'exit 130' INT TERM

base_image() {
    if podman image exists "$BASE_IMAGE" 2>/dev/null; then return 0; fi
    need_root
    local mirror rootfs t0
    mirror=$(apt_mirror)
    rootfs=$(mktemp -d /var/tmp/discordbot-rootfs.XXXXXX)
    ROOTFS=$rootfs
    t0=$(date +%s)
    note "making the base image $BASE_IMAGE: debootstrap bookworm from $mirror (2-3 minutes)"
    if ! logged debootstrap --variant=minbase bookworm "$rootfs" "$mirror"; then
        fail "debootstrap bookworm from $mirror failed"
    fi
    # apt inside the image uses the same mirror; no caches or lists in the image
    printf 'deb %s bookworm main\n' "$mirror" >"$rootfs/etc/apt/sources.list"
    # as debian:bookworm-slim: dpkg leaves docs, man pages and locales out
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
        'path-include /usr/share/locale/locale.alias' 'path-exclude /usr/share/lintian/*' \
        >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim"
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/lintian/*
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
    printf '\n$ tar -C %s -c . | podman import - %s\n' "$rootfs" "$BASE_IMAGE" >>"$ENGINE_LOG"
    if ! tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >>"$ENGINE_LOG" 2>&1; then
        fail "podman import of the debootstrap tree failed"
    fi
    remove_rootfs
    note "base image $BASE_IMAGE made in $(($(date +%s) - t0)) s"
}

serving() {
    [ -S "$SOCK" ] && curl -fsS --max-time 3 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1
}

service() {
    serving && return 0
    need_root
    mkdir -p "$(dirname "$SOCK")"
    rm -f "$SOCK"
    printf '\n$ podman system service --time=0 unix://%s &\n' "$SOCK" >>"$ENGINE_LOG"
    # its own session: it outlives this script (and the test that ran it)
    setsid podman system service --time=0 "unix://$SOCK" >>"${ENGINE_LOG%.log}-service.log" 2>&1 </dev/null &
    local _
    for _ in $(seq 50); do
        serving && { note "podman is serving the Docker API on $SOCK (pid $!)"; return 0; }
        sleep 0.2
    done
    fail "podman system service did not answer on $SOCK within 10 s"
}

TICK_PID=${HEALTHTICK_PIDFILE:-/run/podman/healthtick.pid}

ticker() {
    if [ -f "$TICK_PID" ] && kill -0 "$(cat "$TICK_PID")" 2>/dev/null; then return 0; fi
    if [ -d /run/systemd/system ]; then return 0; fi    # systemd runs the healthchecks itself
    need_root
    mkdir -p "$(dirname "$TICK_PID")"
    printf '\n$ healthtick.sh &\n' >>"$ENGINE_LOG"
    setsid "$ROOT/tests/compose/healthtick.sh" >>"${ENGINE_LOG%.log}-healthtick.log" 2>&1 </dev/null &
    echo $! >"$TICK_PID"
    note "healthcheck ticker running (pid $!; no systemd to run podman's healthchecks)"
}

# a container really runs (the runtime, the ulimits and cgroups are fine)
smoke() {
    logged podman run --rm --network none "$BASE_IMAGE" true ||
        fail "podman cannot run a container here (podman run $BASE_IMAGE true failed)"
}

main() {
    command -v docker >/dev/null 2>&1 || fail "the docker CLI is not installed"
    command -v apt-get >/dev/null 2>&1 || fail "not a Debian system (no apt-get)"
    install_packages
    write_conf
    base_image
    smoke
    service
    ticker
    printf 'export DOCKER_HOST=unix://%s\n' "$SOCK"
    printf 'export BASE_IMAGE=%s\n' "$BASE_IMAGE"
}

main "$@"
