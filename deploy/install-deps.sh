#!/bin/sh
# Installs the Debian 12 packages this project needs to build, test and run.
# clang and libclang-rt-14-dev (libFuzzer and the sanitizer runtimes) are for
# `make fuzz` / `make fuzz-ci` only; the instances are built with cc.
# Idempotent: packages already installed are left alone and apt is not touched
# at all when nothing is missing. Needs root (or sudo) only when it installs.
#
# apt's own output (a few hundred lines on a fresh machine) goes to a log
# file, INSTALL_DEPS_LOG (default logs/install-deps.log in the checkout);
# this prints one line before and one after, or the log's last lines when apt
# fails. An apt run by someone else is waited for (up to 10 minutes) instead
# of failing on its lock.
#
#   ./deploy/install-deps.sh             everything: build, run and test
#   ./deploy/install-deps.sh --runtime   without TEST_PKGS (deploy-multi.sh start)
set -eu

PKGS="build-essential pkg-config ca-certificates curl procps util-linux python3 \
 libuv1-dev libcurl4-openssl-dev libwebsockets-dev libwebsockets-evlib-uv libjson-c-dev \
 libhiredis-dev python3-nacl python3-yaml \
 libpq-dev libmicrohttpd-dev libopus-dev libsodium-dev zlib1g-dev \
 redis-server redis-tools postgresql postgresql-client openssl \
 clang libclang-rt-14-dev"
# For the tests only: ffprobe decodes the sandbox's video (tests/integration/
# mp4check.py). About 90 packages and 45 s on a fresh machine, so `start`,
# which runs the bot rather than its tests, leaves them out.
TEST_PKGS="ffmpeg"

case ${1:-} in
--runtime) TEST_PKGS="" ;;
"") ;;
*) echo "usage: $0 [--runtime]" >&2; exit 2 ;;
esac

missing=""
n=0
for p in $PKGS $TEST_PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
        n=$((n + 1))
    fi
done

if [ -z "$missing" ]; then
    echo "install-deps: all packages present"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "install-deps: need root (or sudo) to install:$missing" >&2
        exit 1
    fi
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG=${INSTALL_DEPS_LOG:-$ROOT/logs/install-deps.log}
if ! mkdir -p "$(dirname "$LOG")" 2>/dev/null || ! : >"$LOG" 2>/dev/null; then
    LOG=$(mktemp "${TMPDIR:-/tmp}/install-deps.XXXXXX.log")
fi
echo "install-deps: installing $n packages with apt-get (a few minutes on a fresh machine; log: $LOG):$missing"
start=$(date +%s)

export DEBIAN_FRONTEND=noninteractive
# policy-rc.d keeps the postgresql/redis packages from starting system-wide
# services we never use: the tests and deploy script run their own servers.
if [ ! -e /usr/sbin/policy-rc.d ] && [ -z "$SUDO" ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi

# run CMD...: append its output to the log; on failure print the log's tail
run() {
    echo "+ $*" >>"$LOG"
    rc=0
    "$@" >>"$LOG" 2>&1 </dev/null || rc=$?
    if [ "$rc" != 0 ]; then
        echo "install-deps: '$*' failed (exit $rc); the last lines of $LOG:" >&2
        tail -n 25 "$LOG" | sed 's/^/  /' >&2
        exit "$rc"
    fi
}

LOCK="-o DPkg::Lock::Timeout=600"
# shellcheck disable=SC2086
run $SUDO apt-get $LOCK update -q
# shellcheck disable=SC2086
run $SUDO apt-get $LOCK install -y -q --no-install-recommends $missing
echo "install-deps: done, $n packages in $(($(date +%s) - start)) s"
