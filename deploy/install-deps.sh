#!/bin/sh
# Installs the Debian 12 packages this project needs to build, test and run.
# clang and libclang-rt-14-dev (libFuzzer and the sanitizer runtimes) are for
# `make fuzz` / `make fuzz-ci` only; the instances are built with cc.
# Idempotent: packages already installed are left alone and apt is not touched
# at all when nothing is missing. Needs root (or sudo) only when it installs.
set -eu

PKGS="build-essential pkg-config ca-certificates curl procps util-linux python3 \
 libuv1-dev libcurl4-openssl-dev libwebsockets-dev libwebsockets-evlib-uv libjson-c-dev \
 libhiredis-dev python3-nacl python3-yaml \
 libpq-dev libmicrohttpd-dev libopus-dev libsodium-dev zlib1g-dev \
 redis-server redis-tools postgresql postgresql-client openssl \
 clang libclang-rt-14-dev"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "install-deps: all packages present"
    exit 0
fi

echo "install-deps: installing:$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "install-deps: need root (or sudo) to install:$missing" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d keeps the postgresql/redis packages from starting system-wide
# services we never use: the tests and deploy script run their own servers.
if [ ! -e /usr/sbin/policy-rc.d ] && [ -z "$SUDO" ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
echo "install-deps: done"
