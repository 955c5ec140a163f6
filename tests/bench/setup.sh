#!/bin/sh
# Bench-only dependencies, installed by `make bench` (never by make test):
#   - gnuplot-nox (Debian) for the PNG plots;
#   - redis-tools' redis-benchmark (the XADD ceiling; normally already there
#     with redis-server from deploy/install-deps.sh);
#   - discord.js, pinned by tests/bench/djs/package-lock.json, installed with
#     `npm ci` into a folder of its own (BENCH_DJS_DIR, default build/bench/djs).
# node and npm come from the machine; Debian's nodejs/npm are the fallback.
# Idempotent: does nothing that is already done.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
djs_dir=${BENCH_DJS_DIR:-$root/build/bench/djs}

need_apt=""
command -v gnuplot >/dev/null 2>&1 || need_apt="$need_apt gnuplot-nox"
command -v redis-benchmark >/dev/null 2>&1 || need_apt="$need_apt redis-tools"
command -v node >/dev/null 2>&1 || need_apt="$need_apt nodejs"
command -v npm >/dev/null 2>&1 || need_apt="$need_apt npm"
if [ -n "$need_apt" ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "bench setup: installing$need_apt" >&2
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $need_apt >/dev/null
fi

mkdir -p "$djs_dir"
if ! cmp -s "$here/djs/package-lock.json" "$djs_dir/package-lock.json" || [ ! -d "$djs_dir/node_modules/discord.js" ]; then
    echo "bench setup: npm ci discord.js into $djs_dir" >&2
    cp "$here/djs/package.json" "$here/djs/package-lock.json" "$djs_dir/"
    (cd "$djs_dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
echo "bench setup: ok (gnuplot $(gnuplot --version | cut -d' ' -f2), node $(node --version), discord.js $(node -e "console.log(require('$djs_dir/node_modules/discord.js/package.json').version)"))" >&2
