#!/usr/bin/env bash
# deploy-multi.sh: run the four-instance cluster on this machine, natively
# (local Redis and PostgreSQL under ./data, the sandbox simulators when keys
# are missing) or through Docker Compose (compose/docker-compose.multi.yml).
#
#   ./deploy/deploy-multi.sh                 a numbered menu (from a terminal)
#   ./deploy/deploy-multi.sh help            every subcommand
#   ./deploy/deploy-multi.sh start           validate .env.multi, build, start
#
# Every subcommand, the menu, the modes, validation, backups, `try` and
# `chaos` are described in docs/deploy.md.
#
# Settings come from .env.multi (cp .env.multi.example .env.multi && chmod 600
# .env.multi: the example holds every setting); the environment overrides it.
# Without REDIS_URL / DATABASE_URL a local Redis (AOF on, port
# LOCAL_REDIS_PORT=56379) and PostgreSQL (LOCAL_PG_PORT=55432) are started
# with their data under ./data/. Health ports are 8001-8004
# unless CHAT_HEALTH_PORT ... ADMIN_HEALTH_PORT say otherwise;
# DEPLOY_STATE_DIR moves data/, logs/, backups/ and try-output/ elsewhere.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# Paths the user gives (try's @file, restore's directory, ENV_FILE,
# DEPLOY_STATE_DIR) are relative to where the command was run, not to the
# checkout the script works in.
CALLER_PWD=$PWD
cd "$ROOT"
# from_caller PATH: PATH made absolute against the caller's directory
from_caller() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s' "$CALLER_PWD/$1" ;; esac; }
PROG=${DEPLOY_PROG:-$0}
ENV_FILE=$(from_caller "${ENV_FILE:-$ROOT/.env.multi}")
STATE=$(from_caller "${DEPLOY_STATE_DIR:-$ROOT}")   # where data/, logs/, backups/ and try-output/ live
DATA=$STATE/data
LOGS=$STATE/logs
RUN=$DATA/run
BACKUPS=$STATE/backups
TRY_OUT=$STATE/try-output
ROLES=(chat image video admin)
LOCAL_REDIS_PORT=${LOCAL_REDIS_PORT:-56379}
LOCAL_PG_PORT=${LOCAL_PG_PORT:-55432}
PG_OS_USER=${PG_OS_USER:-discordbot}
SANDBOX_PORT=${SANDBOX_DISCORD_PORT:-58090}
SANDBOX_AI_PORT=${SANDBOX_OPENAI_PORT:-58091}
SANDBOX_AI_KEY=sandbox-openai-key
SANDBOX_AI=0
SANDBOX_MM_PORT=${SANDBOX_MINIMAX_PORT:-58092}
SANDBOX_ST_PORT=${SANDBOX_STABILITY_PORT:-58093}
SANDBOX_MM_KEY=sandbox-minimax-key
SANDBOX_ST_KEY=sandbox-stability-key
SANDBOX_MM=0
SANDBOX_ST=0
SANDBOX_TOKEN=sandbox-bot-token.local-simulator
SANDBOX_APP=223456789012345678
SANDBOX_GUILD=400000000000000001
SANDBOX_KEY=
SANDBOX=0
COMPOSE_FILE=${COMPOSE_FILE:-$ROOT/compose/docker-compose.multi.yml}
IFS=: read -r -a COMPOSE_FILES <<<"$COMPOSE_FILE"   # file[:override...], as compose reads COMPOSE_FILE
COMPOSE_PROJECT=${COMPOSE_PROJECT_NAME:-discordbot}   # the compose file has no name: (docker-compose 1.29)
DC=()                              # docker compose or docker-compose, see compose_cli
MODE=${DEPLOY_MODE:-auto}          # auto | native | compose
MAKE_JOBS=${MAKE_JOBS:-2}
# Debian's python3: one earlier on PATH (a pyenv shim) can take a second to
# start, and status alone runs it once per call
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

# The 13 provider and Discord keys start checks and reports on.
KEYS=(DISCORD_TOKEN
      OPENAI_API_KEY_1 OPENAI_API_KEY_2 OPENAI_API_KEY_3 OPENAI_API_KEY_4
      MINIMAX_API_KEY_1 MINIMAX_API_KEY_2 MINIMAX_API_KEY_3 MINIMAX_API_KEY_4
      STABILITY_API_KEY_1 STABILITY_API_KEY_2 STABILITY_API_KEY_3 STABILITY_API_KEY_4)
KEY_OVERRIDES=()    # KEY= for every key still holding an example value (env beats the file)

REDIS_URL_EFF=
DATABASE_URL_EFF=
LOCAL_REDIS=0
LOCAL_PG=0
PREFIX=discordbot
RCLI_ARGV=()

say() { printf '%s\n' "$*" 2>/dev/null || true; }
warn() { printf 'deploy-multi: %s\n' "$*" >&2; }
die() { printf 'deploy-multi: %s\n' "$*" >&2; exit 1; }

# The env file, read once into ENVV (KEY -> the value of its last KEY= line,
# `export` allowed, quotes and a trailing " # comment" removed): a lookup
# forks nothing, which keeps status fast on a busy machine. It is read
# again when the file appears or goes away (compose start and restore create
# it); the menu forgets it before each action (the file may have been edited).
declare -A ENVV=()
ENVV_STATE=unread # unread | absent | present
env_load() {
    local state=absent line k v
    [ -f "$ENV_FILE" ] && state=present
    [ "$state" = "$ENVV_STATE" ] && return 0
    ENVV=()
    ENVV_STATE=$state
    [ "$state" = present ] || return 0
    local re='^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=[[:space:]]*(.*)$'
    while IFS= read -r line || [ -n "$line" ]; do
        [[ $line =~ $re ]] || continue
        k=${BASH_REMATCH[2]}
        v=${BASH_REMATCH[3]}
        if [[ $v == *[[:space:]]#* ]]; then
            # the first blank-then-# starts a comment; the blanks before it go too
            v=${v%%[[:space:]]#*}
            while [[ $v == *[[:space:]] ]]; do v=${v%[[:space:]]}; done
        fi
        if [[ $v == \"*\" ]] && [ ${#v} -ge 2 ]; then v=${v:1:${#v}-2}; fi
        if [[ $v == \'*\' ]] && [ ${#v} -ge 2 ]; then v=${v:1:${#v}-2}; fi
        ENVV[$k]=$v
    done <"$ENV_FILE"
}

# setting_to VAR KEY: VAR = the value of KEY: the environment first, then the
# env file. Never printed by this script when it is a secret.
setting_to() {
    local _key=$2
    if [ -n "${!_key+x}" ]; then
        printf -v "$1" '%s' "${!_key}"
        return
    fi
    env_load
    printf -v "$1" '%s' "${ENVV[$_key]-}"
}

# setting KEY: the same, printed
setting() {
    local val
    setting_to val "$1"
    printf '%s' "$val"
}

role_number() { case $1 in chat) echo 1 ;; image) echo 2 ;; video) echo 3 ;; admin) echo 4 ;; esac; }
name_of() { case $1 in chat) echo chat-1 ;; image) echo image-2 ;; video) echo video-3 ;; admin) echo admin-4 ;; esac; }
# compose service of a role: "chat" in compose/docker-compose.multi.yml (its
# container is discord-bot-chat); "discord-bot-chat" if the file names it so
svc_of() {
    if [ -f "$COMPOSE_FILE" ] && grep -qE "^  discord-bot-$1:" "$COMPOSE_FILE"; then
        echo "discord-bot-$1"
    else
        echo "$1"
    fi
}

# chat, chat-1, chat-instance, discord-bot-chat -> chat
role_of_arg() {
    local a=${1#discord-bot-} r
    a=${a%-instance}
    a=${a%-[0-9]*}
    for r in "${ROLES[@]}"; do
        if [ "$a" = "$r" ]; then
            echo "$r"
            return 0
        fi
    done
    return 1
}

# port_to VAR ROLE: VAR = the role's health port. HEALTH_PORT in the env
# file applies to every instance, so the per-role defaults (8001-8004) are
# what the cluster uses unless <ROLE>_HEALTH_PORT is set here.
port_to() {
    local _p _n
    setting_to _p "${2^^}_HEALTH_PORT"
    case $2 in chat) _n=1 ;; image) _n=2 ;; video) _n=3 ;; *) _n=4 ;; esac
    printf -v "$1" '%s' "${_p:-$((8000 + _n))}"
}

port_of() {
    local p
    port_to p "$1"
    echo "$p"
}

failover_ms() { local v; v=$(setting FAILOVER_AFTER_MS); echo "${v:-2500}"; }
heartbeat_ms() { local v; v=$(setting HEARTBEAT_INTERVAL_MS); echo "${v:-1000}"; }
drain_sec() { local v; v=$(setting DRAIN_TIMEOUT_SEC); echo "${v:-30}"; }

bin_of() { echo "$ROOT/$1-instance/$1-instance"; }
pidfile_of() { echo "$RUN/$1.pid"; }

# What the command line of a pidfile's process must contain (guards against
# a stale pidfile whose pid now belongs to someone else): pid_pattern_to VAR FILE
pid_pattern_to() {
    local _b=${2##*/}
    _b=${_b%.pid}
    case $_b in
    chat | image | video | admin) printf -v "$1" '%s' "$_b-instance" ;;
    redis) printf -v "$1" '%s' redis-server ;;
    *-sim) printf -v "$1" '%s' "${_b%-sim}_sim.py" ;;
    *) printf -v "$1" '%s' "" ;;
    esac
}

# A live process (zombies do not count). Builtins only: status calls it
# for every row.
pid_running() {
    local pid=$1 st=""
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    [ -r "/proc/$pid/stat" ] || return 0
    read -r st <"/proc/$pid/stat" 2>/dev/null || [ -n "$st" ] || return 0
    st=${st##*) }
    st=${st%% *}
    [ "$st" != Z ] && [ "$st" != X ]
}

alive() {
    local f=$1 pid="" pat args=()
    [ -f "$f" ] || return 1
    read -r pid <"$f" 2>/dev/null || [ -n "$pid" ] || return 1
    pid_running "$pid" || return 1
    pid_pattern_to pat "$f"
    if [ -n "$pat" ] && [ -r "/proc/$pid/cmdline" ]; then
        mapfile -d '' args <"/proc/$pid/cmdline" 2>/dev/null || return 1
        [[ " ${args[*]} " == *"$pat"* ]] || return 1
    fi
    return 0
}

# wait_gone PID TENTHS: 0 once the process is gone
wait_gone() {
    local pid=$1 n=$2 i
    for ((i = 0; i < n; i++)); do
        pid_running "$pid" || return 0
        sleep 0.1
    done
    ! pid_running "$pid"
}

ensure_built() {
    mkdir -p "$LOGS"
    # --runtime: not the packages only the tests need (ffmpeg)
    INSTALL_DEPS_LOG=$LOGS/install-deps.log "$ROOT/deploy/install-deps.sh" --runtime
    local missing=0 r
    for r in "${ROLES[@]}"; do [ -x "$(bin_of "$r")" ] || missing=1; done
    if [ $missing = 1 ] || [ -n "$(find common "${ROLES[@]/%/-instance}" -newer "$(bin_of admin)" -name '*.[ch]' 2>/dev/null | head -n 1)" ]; then
        say "building..."
        make -j"$MAKE_JOBS" bins >/dev/null
    fi
}

# ---- context: where Redis and PostgreSQL are ------------------------------------

resolve_context() {
    local f
    setting_to REDIS_URL_EFF REDIS_URL
    if [ -z "$REDIS_URL_EFF" ]; then
        setting_to f REDIS_URL_FILE
        if [ -n "$f" ] && [ -r "$f" ]; then REDIS_URL_EFF=$(head -n 1 "$f"); fi
    fi
    setting_to DATABASE_URL_EFF DATABASE_URL
    if [ -z "$DATABASE_URL_EFF" ]; then
        setting_to f DATABASE_URL_FILE
        if [ -n "$f" ] && [ -r "$f" ]; then DATABASE_URL_EFF=$(head -n 1 "$f"); fi
    fi
    LOCAL_REDIS=0
    LOCAL_PG=0
    if [ -z "$REDIS_URL_EFF" ]; then
        REDIS_URL_EFF=redis://127.0.0.1:$LOCAL_REDIS_PORT/0
        LOCAL_REDIS=1
    fi
    if [ -z "$DATABASE_URL_EFF" ]; then
        DATABASE_URL_EFF=postgresql://discordbot@127.0.0.1:$LOCAL_PG_PORT/discordbot
        LOCAL_PG=1
    fi
    setting_to PREFIX REDIS_PREFIX
    PREFIX=${PREFIX:-discordbot}
    rcli_argv
    compute_overrides
}

# RCLI_ARGV: redis-cli talking to the cluster's Redis
rcli_argv() {
    if [ "$MODE" = compose ]; then
        # valkey-cli inside the valkey service (no password in the compose file)
        compose_cli >/dev/null || true
        RCLI_ARGV=(dc exec -T valkey valkey-cli)
        return
    fi
    case $REDIS_URL_EFF in
    unix://*)
        local p=${REDIS_URL_EFF#unix://}
        RCLI_ARGV=(redis-cli --no-auth-warning -s "${p%%\?*}")
        ;;
    *) RCLI_ARGV=(redis-cli --no-auth-warning -u "$REDIS_URL_EFF") ;;
    esac
}

rcli() { "${RCLI_ARGV[@]}" "$@"; }

# name role state age_ms serving: the latest heartbeat of each instance
# The server's time and the last heartbeats in one call, as JSON [TIME,
# XREVRANGE]: the ages are measured against the time of the read itself (in
# compose mode each call goes through the compose CLI and takes a second or
# two; a TIME asked after the read made every beat look stale).
HB_LUA="return {redis.call('TIME'), redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 50)}"
hb_now_json() { rcli --json EVAL "$HB_LUA" 1 "$PREFIX:heartbeats" 2>/dev/null; }

heartbeats() {
    local both
    both=$(hb_now_json) || return 1
    HB_NOW=$both "$PY" -c '
import json, os
try:
    now, hb = json.loads(os.environ["HB_NOW"])
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
except (ValueError, TypeError, IndexError, KeyError):
    raise SystemExit(1)
seen = set()
for row in hb if isinstance(hb, list) else []:
    try:
        eid, flat = row[0], row[1]
    except (IndexError, TypeError):
        continue
    f = dict(zip(flat[::2], flat[1::2]))
    n = f.get("name")
    if not n or n in seen:
        continue
    seen.add(n)
    age = now_ms - int(eid.split("-")[0])
    print(n, f.get("role") or "-", f.get("state") or "running", age, f.get("serving") or f.get("role") or "-")
'
}

# ---- .env.multi validation --------------------------------------------------------

is_example() {
    local v=${1,,}
    case $v in
    *your-* | *your_* | *example* | changeme | '<'*'>') return 0 ;;
    esac
    return 1
}

# key_state_to VAR KEY: VAR = set | file | missing | example | unreadable
key_state_to() {
    local _v _f
    setting_to _v "$2"
    if [ -n "$_v" ]; then
        if is_example "$_v"; then printf -v "$1" example; else printf -v "$1" set; fi
        return
    fi
    setting_to _f "${2}_FILE"
    if [ -n "$_f" ]; then
        if [ -r "$_f" ]; then printf -v "$1" file; else printf -v "$1" unreadable; fi
        return
    fi
    printf -v "$1" missing
}

key_state() {
    local st
    key_state_to st "$1"
    echo "$st"
}

have_key() {
    local st
    key_state_to st "$1"
    case $st in set | file) return 0 ;; *) return 1 ;; esac
}

key_word() {
    case $(key_state "$1") in
    example) echo "still has the example value" ;;
    unreadable) echo "(${1}_FILE unreadable)" ;;
    *) echo missing ;;
    esac
}

# Example values are ignored (blanked through the environment, which beats
# the file) so that a fresh copy of the example file runs the sandbox.
compute_overrides() {
    local key
    local st
    KEY_OVERRIDES=()
    for key in "${KEYS[@]}"; do
        key_state_to st "$key"
        if [ "$st" = example ]; then KEY_OVERRIDES+=("$key="); fi
    done
}

join_list() {
    local out="" x
    for x in "$@"; do out+="${out:+, }$x"; done
    printf '%s' "$out"
}

report_keys() {
    local key set=() missing=() example=() unused=()
    for key in "${KEYS[@]}"; do
        case $(key_state "$key") in
        set | file) set+=("$key") ;;
        example) example+=("$key") ;;
        unreadable) missing+=("$key (${key}_FILE unreadable)") ;;
        missing)
            case $key in
            OPENAI_API_KEY_2 | OPENAI_API_KEY_3 | MINIMAX_API_KEY_1 | STABILITY_API_KEY_1 | STABILITY_API_KEY_3)
                unused+=("$key") ;;
            *) missing+=("$key") ;;
            esac
            ;;
        esac
    done
    if [ ${#set[@]} = 0 ]; then
        say "keys: none of the ${#KEYS[@]} set"
    else
        say "keys: ${#set[@]} of ${#KEYS[@]} set ($(join_list "${set[@]}"))"
    fi
    [ ${#missing[@]} = 0 ] || say "  missing: $(join_list "${missing[@]}")"
    [ ${#example[@]} = 0 ] || say "  still the example value (ignored): $(join_list "${example[@]}")"
    [ ${#unused[@]} = 0 ] || say "  not set, unused by the four default instances: $(join_list "${unused[@]}")"
}

# feature LABEL KEY ON-TEXT OFF-TEXT SIM(0/1) SIMNAME
feature() {
    local label=$1 key=$2 on=$3 off=$4 sim=$5 simname=$6
    if [ "$sim" = 1 ]; then
        say "  $label: $key $(key_word "$key") → sandbox $simname: $on"
    elif have_key "$key"; then
        say "  $label: $on"
    else
        say "  $label: $key $(key_word "$key") → $off"
    fi
}

feature_report() {
    local sb=$1 ai=0 mm=0 st=0
    if [ "$sb" = 1 ]; then
        need_ai_sim && ai=1
        have_key MINIMAX_API_KEY_2 || mm=1
        have_key STABILITY_API_KEY_2 || st=1
    fi
    say "features:"
    if [ "$sb" = 1 ]; then
        if have_key DISCORD_TOKEN; then
            say "  discord: sandbox (start --sandbox): the local Discord simulator, not Discord"
        else
            say "  discord: DISCORD_TOKEN $(key_word DISCORD_TOKEN) → sandbox: the local Discord simulator, not Discord"
        fi
    elif [ "$MODE" = compose ] && ! have_key DISCORD_TOKEN; then
        say "  discord: DISCORD_TOKEN $(key_word DISCORD_TOKEN) → no Discord connection (the sandbox is native only)"
    else
        say "  discord: DISCORD_TOKEN set → Discord itself"
    fi
    if [ "$ai" = 0 ] && ! have_key OPENAI_API_KEY_1 && keyless_llm; then
        # Ollama, llama.cpp and other local servers need no key
        say "  chat: no OPENAI_API_KEY_1 → /채팅 /chat asks OPENAI_BASE_URL without a key (fine for a local server)"
    else
        feature chat OPENAI_API_KEY_1 "/채팅 /chat on" "/채팅 /chat off" "$ai" "OpenAI-compatible simulator"
    fi
    feature image MINIMAX_API_KEY_2 "/이미지 on" "/이미지 off" "$mm" "MiniMax simulator"
    feature image STABILITY_API_KEY_2 "/img on" "/img off" "$st" "Stability simulator"
    feature video MINIMAX_API_KEY_3 "/비디오 on" "/비디오 off" "$mm" "MiniMax simulator"
    feature takeover OPENAI_API_KEY_4 "admin answers /채팅 while chat is down" \
        "admin cannot answer /채팅 while chat is down" "$ai" "OpenAI-compatible simulator"
    feature takeover MINIMAX_API_KEY_4 "admin answers /이미지 and /비디오 while image or video is down" \
        "admin cannot answer /이미지 or /비디오 while image or video is down" "$mm" "MiniMax simulator"
    feature takeover STABILITY_API_KEY_4 "admin answers /img while image is down" \
        "admin cannot answer /img while image is down" "$st" "Stability simulator"
}

# OPENAI_BASE_URL points at a server of its own (Ollama, llama.cpp ...),
# which needs no key
keyless_llm() {
    local base
    base=$(setting OPENAI_BASE_URL)
    [ -n "$base" ] && [[ $base != *api.openai.com* ]]
}

# the sandbox's OpenAI-compatible simulator stands in for a missing key
need_ai_sim() { ! have_key OPENAI_API_KEY_1 && ! keyless_llm; }

check_env_perms() {
    [ -f "$ENV_FILE" ] || return 0
    local mode
    mode=$(stat -c '%a' "$ENV_FILE" 2>/dev/null) || return 0
    case $mode in
    *00) ;;
    *) say "note: $ENV_FILE is readable by other users (mode $mode); chmod 600 it" ;;
    esac
}

# Every binary validates the settings as it will see them; exit 2 names the
# key and the problem, never a value. Returns non-zero when one refuses.
check_config() {
    local r rc out args=() lines="" bad=0 role_lines=""
    [ -f "$ENV_FILE" ] && args=(--env-file "$ENV_FILE")
    for r in "${ROLES[@]}"; do
        [ -x "$(bin_of "$r")" ] || continue
        rc=0
        out=$(env "${KEY_OVERRIDES[@]}" REDIS_URL="$REDIS_URL_EFF" DATABASE_URL="$DATABASE_URL_EFF" \
                  HEALTH_PORT="$(port_of "$r")" "$(bin_of "$r")" "${args[@]}" --check-config 2>&1 >/dev/null) || rc=$?
        if [ "$rc" != 0 ] && [ "$rc" != 2 ]; then
            say "$r-instance --check-config failed with status $rc"
            bad=1
            continue
        fi
        [ "$rc" = 2 ] && bad=1
        role_lines=$(printf '%s\n' "$out" | ROLE=$r "$PY" -c '
import json, os, sys
for line in sys.stdin:
    try:
        d = json.loads(line)
    except ValueError:
        continue
    if not isinstance(d, dict):
        continue
    if d.get("msg") == "invalid configuration":
        print("E\t%s\t%s\t%s" % (d.get("key"), d.get("problem"), os.environ["ROLE"]))
    elif d.get("level") == "warn" and d.get("key") and not str(d.get("key")).endswith("_HEALTH_PORT"):
        print("W\t%s\t%s\t%s" % (d.get("key"), d.get("msg"), os.environ["ROLE"]))
')
        lines+=$role_lines$'\n'
    done
    # one line per problem, with the roles that reported it
    local report
    report=$(printf '%s' "$lines" | awk -F'\t' 'NF >= 4 {
        k = $1 "\t" $2 ": " $3
        if (!(k in roles)) { order[++n] = k; roles[k] = $4 } else roles[k] = roles[k] ", " $4
    } END { for (i = 1; i <= n; i++) print order[i] " (" roles[order[i]] ")" }')
    if printf '%s\n' "$report" | grep -q '^W'; then
        printf '%s\n' "$report" | sed -n 's/^W\t/note: /p'
    fi
    if [ $bad = 1 ]; then
        say "configuration refused by the binaries (nothing was started):"
        printf '%s\n' "$report" | sed -n 's/^E\t/  /p'
        return 2
    fi
    return 0
}

# ---- local redis ------------------------------------------------------------

# start_local_redis [no]: AOF on unless "no" (restore loads an RDB first)
start_local_redis() {
    local aof=${1:-yes}
    mkdir -p "$DATA/redis" "$RUN" "$LOGS"
    if alive "$RUN/redis.pid"; then return; fi
    redis-server --bind 127.0.0.1 --port "$LOCAL_REDIS_PORT" --dir "$DATA/redis" \
        --appendonly "$aof" --save '' --daemonize yes --pidfile "$RUN/redis.pid" \
        --logfile "$LOGS/redis.log" >/dev/null
    for _ in $(seq 50); do
        redis-cli -p "$LOCAL_REDIS_PORT" ping >/dev/null 2>&1 && return
        sleep 0.1
    done
    die "local redis did not start (see logs/redis.log)"
}

stop_local_redis() {
    alive "$RUN/redis.pid" || { rm -f "$RUN/redis.pid"; return 0; }
    local pid
    pid=$(cat "$RUN/redis.pid")
    redis-cli -p "$LOCAL_REDIS_PORT" shutdown >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    wait_gone "$pid" 300 || { kill -KILL "$pid" 2>/dev/null || true; wait_gone "$pid" 50 || true; }
    rm -f "$RUN/redis.pid"
    say "local redis: shut down"
}

# ---- local postgresql ----------------------------------------------------------

pg_bin() {
    local d
    d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n 1)
    printf '%s' "$d"
}

as_pg_user() {
    if [ "$(id -u)" = 0 ]; then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}

start_local_pg() {
    local bin
    bin=$(pg_bin)
    [ -n "$bin" ] || die "PostgreSQL server binaries not found; run ./deploy/install-deps.sh"
    mkdir -p "$DATA/pg" "$RUN" "$LOGS"
    if [ "$(id -u)" = 0 ]; then
        # PostgreSQL refuses to run as root: it runs as an unprivileged user.
        id "$PG_OS_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER"
        chown "$PG_OS_USER" "$DATA/pg"
        runuser -u "$PG_OS_USER" -- test -x "$DATA/pg" ||
            die "user $PG_OS_USER cannot reach $DATA/pg (a parent directory is private); set DATABASE_URL or move the checkout"
    fi
    if [ ! -f "$DATA/pg/db/PG_VERSION" ]; then
        as_pg_user "$bin/initdb" -D "$DATA/pg/db" -U discordbot --auth=trust -E UTF8 --locale=C.UTF-8 >"$LOGS/pg-init.log" 2>&1 ||
            die "initdb failed (see logs/pg-init.log)"
    fi
    if ! as_pg_user "$bin/pg_ctl" -D "$DATA/pg/db" status >/dev/null 2>&1; then
        touch "$LOGS/postgres.log"
        if [ "$(id -u)" = 0 ]; then chown "$PG_OS_USER" "$LOGS/postgres.log"; fi
        as_pg_user "$bin/pg_ctl" -D "$DATA/pg/db" -w -t 60 -l "$LOGS/postgres.log" \
            -o "-c listen_addresses=127.0.0.1 -p $LOCAL_PG_PORT -k $DATA/pg" start >/dev/null ||
            die "postgresql did not start (see logs/postgres.log)"
    fi
    as_pg_user "$bin/psql" -h 127.0.0.1 -p "$LOCAL_PG_PORT" -U discordbot -d postgres -Atqc \
        "SELECT 1 FROM pg_database WHERE datname='discordbot'" | grep -q 1 ||
        as_pg_user "$bin/createdb" -h 127.0.0.1 -p "$LOCAL_PG_PORT" -U discordbot discordbot
}

pg_running() {
    local bin
    bin=$(pg_bin)
    [ -n "$bin" ] && [ -f "$DATA/pg/db/PG_VERSION" ] && as_pg_user "$bin/pg_ctl" -D "$DATA/pg/db" status >/dev/null 2>&1
}

stop_local_pg() {
    pg_running || return 0
    as_pg_user "$(pg_bin)/pg_ctl" -D "$DATA/pg/db" -m fast -w stop >/dev/null
    say "local postgresql: shut down"
}

# pg_tool NAME: the client tool matching the local server (pg_dump, pg_restore, psql)
pg_tool() {
    local bin
    bin=$(pg_bin)
    if [ "$LOCAL_PG" = 1 ] && [ -n "$bin" ] && [ -x "$bin/$1" ]; then echo "$bin/$1"; else echo "$1"; fi
}

# PG_ARGS: connection arguments of pg_dump / pg_restore / psql
pg_args() {
    if [ "$LOCAL_PG" = 1 ]; then
        PG_ARGS=(-h 127.0.0.1 -p "$LOCAL_PG_PORT" -U discordbot -d discordbot)
    else
        PG_ARGS=(-d "$DATABASE_URL_EFF")
    fi
}

# ---- sandbox: the Discord simulator from tests/sim --------------------------------

start_sandbox() {
    mkdir -p "$RUN" "$LOGS"
    if ! alive "$RUN/discord-sim.pid"; then
        : >"$RUN/discord-sim.out"
        nohup /usr/bin/python3 "$ROOT/tests/sim/discord_sim.py" --port "$SANDBOX_PORT" \
            --token "$SANDBOX_TOKEN" --application-id "$SANDBOX_APP" \
            >"$RUN/discord-sim.out" 2>>"$LOGS/discord-sim.log" </dev/null &
        echo $! >"$RUN/discord-sim.pid"
        for _ in $(seq 100); do
            grep -q "SIM READY" "$RUN/discord-sim.out" 2>/dev/null && break
            alive "$RUN/discord-sim.pid" || die "the Discord simulator did not start (see logs/discord-sim.log)"
            sleep 0.1
        done
        grep -q "SIM READY" "$RUN/discord-sim.out" || die "the Discord simulator did not start in 10 s"
        local api=http://127.0.0.1:$SANDBOX_PORT
        curl -s -o /dev/null -X POST "$api/_sim/guilds" -H 'Content-Type: application/json' -d '{
          "id": "'"$SANDBOX_GUILD"'", "name": "sandbox", "channels": [
            {"id": "500000000000000001", "name": "채팅방-1", "type": 0},
            {"id": "500000000000000002", "name": "ai-지원", "type": 0},
            {"id": "500000000000000003", "name": "이미지생성-1", "type": 0},
            {"id": "500000000000000004", "name": "갤러리", "type": 0},
            {"id": "500000000000000005", "name": "비디오생성-1", "type": 0},
            {"id": "500000000000000006", "name": "일반", "type": 0}]}' ||
            die "cannot set up the sandbox server"
    fi
    # the providers too, unless real keys are configured
    if need_ai_sim; then
        start_provider_sim openai-sim openai_sim.py "$SANDBOX_AI_PORT" "$SANDBOX_AI_KEY"
        say "sandbox: OpenAI-compatible simulator on port $SANDBOX_AI_PORT (answers echo the question)"
    fi
    if ! have_key MINIMAX_API_KEY_2; then
        start_provider_sim minimax-sim minimax_sim.py "$SANDBOX_MM_PORT" "$SANDBOX_MM_KEY"
        say "sandbox: MiniMax simulator on port $SANDBOX_MM_PORT (images and videos, generated locally)"
    fi
    if ! have_key STABILITY_API_KEY_2; then
        start_provider_sim stability-sim stability_sim.py "$SANDBOX_ST_PORT" "$SANDBOX_ST_KEY"
        say "sandbox: Stability simulator on port $SANDBOX_ST_PORT"
    fi
    say "sandbox: Discord simulator on port $SANDBOX_PORT (server \"sandbox\", channels 채팅방-1, ai-지원,"
    say "         이미지생성-1, 갤러리, 비디오생성-1, 일반); control API: http://127.0.0.1:$SANDBOX_PORT/_sim/info"
    say "         talk to it: $PROG try '#채팅방-1' '/채팅 안녕'"
}

# start_provider_sim NAME SCRIPT PORT KEY: a provider simulator from tests/sim
start_provider_sim() {
    local name=$1 script=$2 port=$3 key=$4
    alive "$RUN/$name.pid" && return 0
    : >"$RUN/$name.out"
    nohup /usr/bin/python3 "$ROOT/tests/sim/$script" --port "$port" --key "$key" \
        >"$RUN/$name.out" 2>>"$LOGS/$name.log" </dev/null &
    echo $! >"$RUN/$name.pid"
    for _ in $(seq 100); do
        grep -q "SIM READY" "$RUN/$name.out" 2>/dev/null && return 0
        alive "$RUN/$name.pid" || die "the $name simulator did not start (see logs/$name.log)"
        sleep 0.1
    done
    die "the $name simulator did not start in 10 s"
}

# What the running simulators mean for instances started now.
sandbox_context() {
    SANDBOX=0
    SANDBOX_AI=0
    SANDBOX_MM=0
    SANDBOX_ST=0
    if alive "$RUN/discord-sim.pid"; then
        SANDBOX_KEY=$(curl -s --max-time 5 "http://127.0.0.1:$SANDBOX_PORT/_sim/info" |
                      "$PY" -c 'import json,sys; print(json.load(sys.stdin)["public_key_hex"])') ||
            die "the sandbox Discord simulator does not answer on port $SANDBOX_PORT"
        SANDBOX=1
    fi
    if alive "$RUN/openai-sim.pid"; then SANDBOX_AI=1; fi
    if alive "$RUN/minimax-sim.pid"; then SANDBOX_MM=1; fi
    if alive "$RUN/stability-sim.pid"; then SANDBOX_ST=1; fi
}

stop_sandbox() {
    local sim pid any=0
    for sim in discord-sim openai-sim minimax-sim stability-sim; do
        if alive "$RUN/$sim.pid"; then
            pid=$(cat "$RUN/$sim.pid")
            kill -TERM "$pid" 2>/dev/null || true
            wait_gone "$pid" 50 || { kill -KILL "$pid" 2>/dev/null || true; wait_gone "$pid" 20 || true; }
            any=1
        fi
        rm -f "$RUN/$sim.pid" "$RUN/$sim.out"
    done
    if [ $any = 1 ]; then say "sandbox: simulators ended"; fi
}

# ---- instances -------------------------------------------------------------------

start_instance() {
    local role=$1 pidfile port args=()
    pidfile=$(pidfile_of "$role")
    port=$(port_of "$role")
    if alive "$pidfile"; then
        say "$role-instance already running (pid $(cat "$pidfile"))"
        return
    fi
    [ -f "$ENV_FILE" ] && args=(--env-file "$ENV_FILE")
    local sandbox_env=()
    if [ "$SANDBOX" = 1 ]; then
        sandbox_env=(DISCORD_TOKEN="$SANDBOX_TOKEN" DISCORD_APPLICATION_ID="$SANDBOX_APP"
                     DISCORD_GUILD_ID="$SANDBOX_GUILD" DISCORD_PUBLIC_KEY="$SANDBOX_KEY"
                     DISCORD_API_BASE="http://127.0.0.1:$SANDBOX_PORT/api/v10")
    fi
    # every instance gets the simulators' keys under its own index (admin's is 4)
    local n
    if [ "$SANDBOX_AI" = 1 ]; then
        sandbox_env+=(OPENAI_BASE_URL="http://127.0.0.1:$SANDBOX_AI_PORT/v1")
        for n in 1 2 3 4; do sandbox_env+=("OPENAI_API_KEY_$n=$SANDBOX_AI_KEY"); done
    fi
    if [ "$SANDBOX_MM" = 1 ]; then
        sandbox_env+=(MINIMAX_BASE_URL="http://127.0.0.1:$SANDBOX_MM_PORT")
        for n in 1 2 3 4; do sandbox_env+=("MINIMAX_API_KEY_$n=$SANDBOX_MM_KEY"); done
    fi
    if [ "$SANDBOX_ST" = 1 ]; then
        sandbox_env+=(STABILITY_BASE_URL="http://127.0.0.1:$SANDBOX_ST_PORT")
        for n in 1 2 3 4; do sandbox_env+=("STABILITY_API_KEY_$n=$SANDBOX_ST_KEY"); done
    fi
    local video_dir
    video_dir=$(setting VIDEO_DIR)
    [ -n "$video_dir" ] || video_dir=$DATA/videos
    mkdir -p "$LOGS" "$RUN"
    env "${KEY_OVERRIDES[@]}" REDIS_URL="$REDIS_URL_EFF" DATABASE_URL="$DATABASE_URL_EFF" HEALTH_PORT="$port" \
        VIDEO_DIR="$video_dir" "${sandbox_env[@]}" \
        nohup "$(bin_of "$role")" "${args[@]}" >>"$LOGS/$role.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
}

wait_healthy() {
    local role=$1 port code
    port=$(port_of "$role")
    for _ in $(seq 150); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/health" || true)
        [ "$code" = 200 ] && return 0
        alive "$(pidfile_of "$role")" || { say "$role-instance exited; last log lines:"; tail -n 5 "$LOGS/$role.log"; return 1; }
        sleep 0.1
    done
    say "$role-instance not healthy after 15 s (see logs/$role.log)"
    return 1
}

# wait_role_home ROLE NAME SECONDS: until NAME serves ROLE and nobody else
# does (a taker hands the role back after a few beats)
wait_role_home() {
    local role=$1 name=$2 limit=$3 fo n r st age serving mine others end
    fo=$(failover_ms)
    # a deadline, not a count of rounds: in compose mode each round asks
    # Redis through the compose CLI, which takes a second or two
    end=$((SECONDS + limit))
    while [ "$SECONDS" -lt "$end" ]; do
        mine=0
        others=0
        while read -r n r st age serving; do
            if [ "$st" != running ] || [ "$age" -ge "$fo" ]; then continue; fi
            case ",$serving," in
            *",$role,"*) if [ "$n" = "$name" ]; then mine=1; else others=1; fi ;;
            esac
        done < <(heartbeats || true)
        [ $mine = 1 ] && [ $others = 0 ] && return 0
        sleep 0.2
    done
    return 1
}

cmd_start() {
    local force_sandbox=0 a
    for a in "$@"; do
        case $a in
        --sandbox) force_sandbox=1 ;;
        *) die "start: unknown option $a (start [--sandbox])" ;;
        esac
    done
    mkdir -p "$LOGS" "$RUN"
    if [ -f "$ENV_FILE" ]; then
        check_env_perms
    else
        if [ "$ENV_FILE" = "$ROOT/.env.multi" ]; then
            say "note: no .env.multi; using defaults (to set keys: cp .env.multi.example .env.multi && chmod 600 .env.multi)"
        else
            say "note: no $ENV_FILE; using defaults (to set keys: cp $ROOT/.env.multi.example $ENV_FILE && chmod 600 $ENV_FILE)"
        fi
    fi
    ensure_built
    resolve_context
    local sb=0
    if [ $force_sandbox = 1 ] || ! have_key DISCORD_TOKEN || alive "$RUN/discord-sim.pid"; then sb=1; fi
    report_keys
    feature_report "$sb"
    check_config || exit 2
    if [ "$LOCAL_REDIS" = 1 ]; then
        start_local_redis
        say "redis: local, data in data/redis (AOF on), port $LOCAL_REDIS_PORT"
    fi
    if [ "$LOCAL_PG" = 1 ]; then
        start_local_pg
        say "postgresql: local, data in data/pg, port $LOCAL_PG_PORT"
    fi
    if [ $sb = 1 ]; then start_sandbox; fi
    sandbox_context
    local r ok=0
    for r in "${ROLES[@]}"; do start_instance "$r"; done
    for r in "${ROLES[@]}"; do wait_healthy "$r" || ok=1; done
    cmd_status || true
    return $ok
}

# SIGTERM every instance (they drain), wait, SIGKILL what outlives the drain.
stop_instances() {
    local pids=() r pid drain
    for r in "${ROLES[@]}"; do
        if alive "$(pidfile_of "$r")"; then
            kill -TERM "$(cat "$(pidfile_of "$r")")" 2>/dev/null || true
            pids+=("$r")
        else
            rm -f "$(pidfile_of "$r")"
        fi
    done
    # instances drain (DRAIN_TIMEOUT_SEC, default 30) before they exit
    drain=$(drain_sec)
    for r in "${pids[@]}"; do
        pid=$(cat "$(pidfile_of "$r")")
        if ! wait_gone "$pid" $(((drain + 5) * 10)); then
            say "$r-instance still running after the drain timeout: killing it"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 50 || true
        fi
        rm -f "$(pidfile_of "$r")"
        say "$r-instance stopped"
    done
}

cmd_stop() {
    stop_instances
    stop_local_redis
    stop_local_pg
    stop_sandbox
}

health_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1/health" || true; }

# status: one Python process asks the four /health endpoints and Redis (two
# redis-cli calls) at once, each bounded by STATUS_TIMEOUT seconds, so the
# table comes in well under a second and a hung instance costs one timeout,
# not one per row. Exit 1 when an instance does not answer /health with 200
# (as `health`).
STATUS_PY=$(cat <<'PY'
import json, os, socket, subprocess, sys, threading, time

fo = int(os.environ.get("FO") or 3000)
timeout = float(os.environ.get("STATUS_TIMEOUT") or 1)
sep = sys.argv.index("--")
rows, rcli = [a.split(",") for a in sys.argv[1:sep]], sys.argv[sep + 1:]
results = {}


def health(port):
    """(http code, JSON or None); (None, None) when nothing answers in time."""
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (OSError, ValueError):
        return None, None
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        code = int(head.split(None, 2)[1])
    except (IndexError, ValueError):
        return None, None
    try:
        return code, json.loads(body)
    except ValueError:
        return code, {"status": "http-%d" % code}


def redis(key, *args):
    try:
        p = subprocess.run(rcli + ["--json"] + list(args), capture_output=True, text=True, timeout=timeout)
        results[key] = json.loads(p.stdout) if p.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        results[key] = None


threads = [threading.Thread(target=lambda r=r: results.__setitem__(r[3], health(r[3])), daemon=True) for r in rows]
if os.environ.get("HB_NOW_JSON"):  # read by the shell (compose mode: valkey-cli inside its container)
    try:
        results["time"], results["hb"] = json.loads(os.environ["HB_NOW_JSON"])
    except (ValueError, TypeError):
        results["time"] = results["hb"] = None
elif rcli:
    prefix = os.environ.get("PREFIX", "discordbot")
    threads.append(threading.Thread(target=redis, args=("hb", "XREVRANGE", prefix + ":heartbeats", "+", "-",
                                                        "COUNT", "50"), daemon=True))
    threads.append(threading.Thread(target=redis, args=("time", "TIME"), daemon=True))
for th in threads:
    th.start()
deadline = time.monotonic() + timeout + 0.5
for th in threads:
    th.join(max(0.0, deadline - time.monotonic()))

# the latest heartbeat of each instance
beats, hb_ok = {}, False
try:
    now_ms = int(results["time"][0]) * 1000 + int(results["time"][1]) // 1000
    hb = results["hb"]
    hb_ok = isinstance(hb, list)
except (KeyError, TypeError, ValueError, IndexError):
    hb = None
for row in hb if hb_ok else []:
    try:
        eid, flat = row[0], row[1]
        f = dict(zip(flat[::2], flat[1::2]))
        n = f.get("name")
        if not n or n in beats:
            continue
        beats[n] = {"role": f.get("role") or "-", "state": f.get("state") or "running",
                    "age": now_ms - int(str(eid).split("-")[0]),
                    "serving": (f.get("serving") or f.get("role") or "-").split(",")}
    except (IndexError, TypeError, ValueError):
        continue


def human(s):
    if not isinstance(s, (int, float)):
        return "-"
    s = int(s)
    if s < 60:
        return "%ds" % s
    if s < 3600:
        return "%dm%02ds" % (s // 60, s % 60)
    if s < 86400:
        return "%dh%02dm" % (s // 3600, s % 3600 // 60)
    return "%dd%02dh" % (s // 86400, s % 86400 // 3600)


dead = set()  # instances we know are down (no process, no /health) whatever their last beat says


def live(b, name=None):
    return b is not None and b["state"] == "running" and b["age"] < fo and name not in dead


fmt = "%-10s %-6s %-8s %-6s %-10s %-8s %-9s %-7s %s"
print(fmt % ("INSTANCE", "ROLE", "PID", "PORT", "HEALTH", "UPTIME", "PROCESSED", "FAILED", "SERVES"))
own, bad = {}, 0
for role, name, pid, port in rows:
    own[role] = name
    code, h = results.get(port) or (None, None)
    if code != 200:
        bad = 1
    b = beats.get(name)
    if h:
        name = h.get("instance") or name
        status = h.get("status") or "?"
        if pid == "-" and h.get("pid"):
            pid = str(h["pid"])
        up, proc, failed = human(h.get("uptime_s")), h.get("processed", "-"), h.get("failed", "-")
    else:
        status = "down" if pid == "-" else "no-answer"
        up = proc = failed = "-"
        if pid == "-":
            dead.add(name)
    if b is not None and b["state"] == "draining" and b["age"] < fo:
        status = "draining"
    serves = ",".join(b["serving"]) if live(b, name) else "-"
    print(fmt % (name, role, pid, port, status, up, proc, failed, serves))

print()
if not hb_ok:
    print("who serves each role: unknown (cannot read %s:heartbeats from redis)" % os.environ.get("PREFIX", "discordbot"))
    sys.exit(bad)
print("who serves each role now (heartbeats):")


def order(n):
    tail = n.rsplit("-", 1)[-1]
    return (int(tail) if "-" in n and tail.isdigit() else 99, n)


for role in ("chat", "image", "video", "admin"):
    servers = sorted((n for n, b in beats.items() if live(b, n) and role in b["serving"]), key=order)
    mine = [n for n in servers if beats[n]["role"] == role]
    takers = [n for n in servers if beats[n]["role"] != role]
    if mine and not takers:
        what = ", ".join(mine)
    elif takers and not mine:
        home = own.get(role, role)
        b = beats.get(home)
        why = "%s is %s" % (home, "draining" if b is not None and b["state"] == "draining" else "down")
        what = "%s (takeover: %s)" % (", ".join(takers), why)
    elif mine and takers:
        what = "%s (handing back from %s)" % (", ".join(mine), ", ".join(takers))
    elif own.get(role) in dead:
        what = "nobody yet (%s is down; another instance takes over within FAILOVER_AFTER_MS, %d ms)" % (own[role], fo)
    else:
        what = "nobody (no live instance)"
    print("  %-6s → %s" % (role, what))
sys.exit(bad)
PY
)

# status: exit 0 only when every instance answers /health with 200
cmd_status() {
    resolve_context
    local rows=() r pid port fo rt=${STATUS_TIMEOUT:-1}
    for r in "${ROLES[@]}"; do
        pid=-
        if [ "$MODE" = native ] && alive "$RUN/$r.pid"; then read -r pid <"$RUN/$r.pid"; fi
        port_to port "$r"
        rows+=("$r,$(name_of "$r"),$pid,$port")
    done
    setting_to fo FAILOVER_AFTER_MS
    if [ "$MODE" = compose ]; then
        # valkey-cli inside its container (RCLI_ARGV may go through a shell
        # function): read here, the time and the beats in one call
        local both
        both=$(hb_now_json) || both=null
        HB_NOW_JSON=$both STATUS_TIMEOUT=$rt FO=${fo:-2500} PREFIX=$PREFIX \
            "$PY" -c "$STATUS_PY" "${rows[@]}" --
        return
    fi
    HB_NOW_JSON='' STATUS_TIMEOUT=$rt FO=${fo:-2500} PREFIX=$PREFIX "$PY" -c "$STATUS_PY" "${rows[@]}" -- "${RCLI_ARGV[@]}"
}

cmd_health() {
    local bad=0 r port code pids=() tmp
    # the four requests at once: a hung instance costs one timeout, not four
    tmp=$(mktemp -d)
    for r in "${ROLES[@]}"; do
        health_code "$(port_of "$r")" >"$tmp/$r" &
        pids+=($!)
    done
    wait "${pids[@]}" 2>/dev/null || true
    for r in "${ROLES[@]}"; do
        port=$(port_of "$r")
        code=$(cat "$tmp/$r" 2>/dev/null || true)
        if [ "$code" = 200 ]; then
            say "$r ($port): healthy"
        else
            say "$r ($port): UNHEALTHY (http ${code:-none})"
            bad=1
        fi
    done
    rm -rf "$tmp"
    return $bad
}

LOGS_PY=$(cat <<'PY'
import collections, heapq, os, re, sys

n = int(os.environ.get("LOG_LINES") or 0)
pairs = list(zip(sys.argv[1::2], sys.argv[2::2]))
TS = re.compile(r'^\{"ts":"([^"]+)"')


def lines(name, path):
    ts = ""
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError:
        return
    with f:
        for line in f:
            m = TS.match(line)
            if m:
                ts = m.group(1)
            yield ts, "[%s] %s" % (name, line.rstrip("\n"))


merged = heapq.merge(*[lines(a, b) for a, b in pairs], key=lambda x: x[0])
if n > 0:
    merged = collections.deque(merged, maxlen=n)
try:
    for _ts, text in merged:
        sys.stdout.write(text + "\n")
    sys.stdout.flush()
except BrokenPipeError:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
PY
)

# logs [-f|--follow|--no-follow] [-n N] [instance]: the instances' logs
# merged in time order, each line prefixed with its instance
cmd_logs() {
    local follow=auto n="" which="" r
    while [ $# -gt 0 ]; do
        case $1 in
        -f | --follow) follow=1 ;;
        --no-follow) follow=0 ;;
        -n | --lines) [ $# -ge 2 ] || die "logs: $1 needs a number"; n=$2; shift ;;
        -n* | --lines=*) n=${1#-n}; n=${n#--lines=} ;;
        -*) die "logs: unknown option $1 (logs [-f|--no-follow] [-n N] [instance])" ;;
        *) which=$1 ;;
        esac
        shift
    done
    case $n in '' | *[!0-9]*) [ -z "$n" ] || die "logs: -n needs a number" ;; esac
    if [ "$follow" = auto ]; then
        if [ -t 1 ]; then follow=1; else follow=0; fi
    fi
    local names=() files=()
    if [ -z "$which" ]; then
        for r in "${ROLES[@]}"; do names+=("$(name_of "$r")"); files+=("$LOGS/$r.log"); done
    elif r=$(role_of_arg "$which"); then
        names=("$(name_of "$r")")
        files=("$LOGS/$r.log")
    elif [ -f "$LOGS/${which%.log}.log" ]; then
        names=("${which%.log}")
        files=("$LOGS/${which%.log}.log")
    else
        die "logs: no log for '$which' (instances: chat image video admin; others: ls $LOGS)"
    fi
    if [ "$follow" = 0 ]; then
        local args=() i
        for i in "${!names[@]}"; do args+=("${names[$i]}" "${files[$i]}"); done
        LOG_LINES=$n "$PY" -c "$LOGS_PY" "${args[@]}"
        return 0
    fi
    # tail -F of each file, each line prefixed with its instance
    local i
    trap 'jobs -p | xargs -r kill 2>/dev/null; exit 0' INT TERM
    trap 'jobs -p | xargs -r kill 2>/dev/null' EXIT
    for i in "${!names[@]}"; do
        tail -n "${n:-20}" -F "${files[$i]}" 2>/dev/null | sed -u "s/^/[${names[$i]}] /" &
    done
    wait
}

# ---- update: pull, build, rolling restart -------------------------------------------

git_pull() {
    if ! git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        say "update: $ROOT is not a git checkout; skipping git pull"
        return 0
    fi
    local up
    if ! up=$(git -C "$ROOT" rev-parse --abbrev-ref --symbolic-full-name '@{u}' 2>/dev/null); then
        say "update: the current branch has no upstream; skipping git pull"
        return 0
    fi
    say "update: git pull --ff-only ($up)"
    git -C "$ROOT" pull --ff-only || die "update: git pull --ff-only failed; nothing was restarted"
}

# Restart one instance: SIGTERM (it drains; its beat says draining, so
# another instance takes its role at once), wait for the exit, start, wait
# healthy, wait until the role is handed back.
rolling_restart_one() {
    local role=$1 name pf pid drain hb fo
    name=$(name_of "$role")
    pf=$(pidfile_of "$role")
    drain=$(drain_sec)
    if alive "$pf"; then
        pid=$(cat "$pf")
        say "update: $name: draining (SIGTERM to pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" $(((drain + 5) * 10)); then
            say "update: $name still running after the drain timeout: killing it"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 50 || true
        fi
    else
        say "update: $name was not running"
    fi
    rm -f "$pf"
    start_instance "$role"
    wait_healthy "$role" || die "update: $name did not come back healthy (see logs/$role.log); the others still run"
    hb=$(heartbeat_ms)
    fo=$(failover_ms)
    if wait_role_home "$role" "$name" $(((4 * hb + fo) / 1000 + 5)); then
        say "update: $name is back and serves $role (pid $(cat "$pf"))"
    else
        say "update: $name is healthy (pid $(cat "$pf")); its role was not handed back yet"
    fi
}

cmd_update() {
    local pull=1 build=1 a r
    for a in "$@"; do
        case $a in
        --no-pull) pull=0 ;;
        --no-build) build=0 ;;
        *) die "update: unknown option $a (update [--no-pull] [--no-build])" ;;
        esac
    done
    if [ $pull = 1 ]; then git_pull; else say "update: skipping git pull (--no-pull)"; fi
    if [ $build = 1 ]; then
        say "update: make -j$MAKE_JOBS bins"
        make -j"$MAKE_JOBS" bins >"$STATE/.update-build.log" 2>&1 || {
            tail -n 20 "$STATE/.update-build.log" >&2
            die "update: the build failed; nothing was restarted"
        }
        rm -f "$STATE/.update-build.log"
    fi
    resolve_context
    check_config || die "update: the new binaries refuse the configuration; nothing was restarted"
    local any=0
    for r in "${ROLES[@]}"; do alive "$(pidfile_of "$r")" && any=1; done
    if [ $any = 0 ]; then
        say "update: no instance runs here; start the cluster with: $PROG start"
        return 0
    fi
    mkdir -p "$LOGS" "$RUN"
    sandbox_context
    # admin last: while it restarts, the lowest-numbered instance serves its role
    for r in "${ROLES[@]}"; do rolling_restart_one "$r"; done
    say "update: done"
    cmd_status || true
}

# ---- cleanup --------------------------------------------------------------------

confirm() {
    local what=$1 ans=""
    [ -t 0 ] || die "$what needs --yes when there is no terminal to ask on"
    printf 'Type yes to go on: '
    read -r ans || ans=""
    [ "$ans" = yes ]
}

cmd_cleanup() {
    local yes=0 a
    for a in "$@"; do
        case $a in
        --yes | -y) yes=1 ;;
        *) die "cleanup: unknown option $a (cleanup [--yes])" ;;
        esac
    done
    if [ $yes = 0 ]; then
        say "cleanup stops the cluster and deletes $DATA (Redis and PostgreSQL data),"
        say "$LOGS and $TRY_OUT. $BACKUPS and $ENV_FILE stay."
        confirm cleanup || { say "cleanup: cancelled"; return 1; }
    fi
    cmd_stop
    rm -rf -- "$DATA" "$LOGS" "$TRY_OUT"
    say "cleanup: removed $DATA, $LOGS and $TRY_OUT"
    resolve_context
    if [ "$LOCAL_REDIS" = 0 ] || [ "$LOCAL_PG" = 0 ]; then
        say "cleanup: the external REDIS_URL / DATABASE_URL servers were not touched"
    fi
}

# ---- backup and restore -------------------------------------------------------------

new_backup_dir() {
    local ts dir n=1
    ts=$(date -u +%Y%m%d-%H%M%SZ)
    dir=$BACKUPS/$ts
    while [ -e "$dir" ]; do
        n=$((n + 1))
        dir=$BACKUPS/$ts-$n
    done
    mkdir -p "$dir"
    chmod 700 "$BACKUPS" "$dir"
    printf '%s' "$dir"
}

finish_backup() {
    local dir=$1 f
    {
        say "created_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        say "mode=$MODE"
        say "git_rev=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
        say "redis_prefix=$PREFIX"
        say "files (sha256 bytes name):"
        for f in "$dir"/*; do
            [ "$(basename "$f")" = MANIFEST ] && continue
            say "  $(sha256sum "$f" | cut -d' ' -f1) $(stat -c %s "$f") $(basename "$f")"
        done
    } >"$dir/MANIFEST"
    chmod 600 "$dir"/*
    ln -sfn "$(basename "$dir")" "$BACKUPS/latest"
    say "backup: $dir (backups/latest points at it)"
    for f in "$dir"/*; do say "  $(basename "$f") $(stat -c %s "$f") bytes"; done
}

cmd_backup() {
    umask 077
    resolve_context
    mkdir -p "$LOGS" "$RUN"
    local started_redis=0 started_pg=0 dir
    if [ "$LOCAL_REDIS" = 1 ] && ! alive "$RUN/redis.pid"; then start_local_redis; started_redis=1; fi
    if [ "$LOCAL_PG" = 1 ] && ! pg_running; then start_local_pg; started_pg=1; fi
    dir=$(new_backup_dir)
    pg_args
    "$(pg_tool pg_dump)" "${PG_ARGS[@]}" -Fc -f "$dir/postgres.dump" ||
        die "backup: pg_dump failed (partial backup left in $dir)"
    if ! rcli --rdb "$dir/redis.rdb" >"$dir/.rdb.log" 2>&1; then
        if [ "$LOCAL_REDIS" = 1 ]; then
            # fall back to BGSAVE and a copy of the dump file
            local last
            last=$(rcli LASTSAVE)
            rcli BGSAVE >/dev/null
            for _ in $(seq 600); do [ "$(rcli LASTSAVE)" != "$last" ] && break; sleep 0.1; done
            cp "$DATA/redis/dump.rdb" "$dir/redis.rdb" || die "backup: no Redis snapshot (see $dir/.rdb.log)"
        else
            die "backup: redis-cli --rdb failed (see $dir/.rdb.log)"
        fi
    fi
    rm -f "$dir/.rdb.log"
    if [ -f "$ENV_FILE" ]; then cp "$ENV_FILE" "$dir/env.multi"; fi
    finish_backup "$dir"
    if [ $started_redis = 1 ]; then stop_local_redis; fi
    if [ $started_pg = 1 ]; then stop_local_pg; fi
}

# restore_local_redis RDB: replace the local Redis data with a snapshot
restore_local_redis() {
    local rdb=$1 info
    stop_local_redis >/dev/null
    rm -rf "$DATA/redis/appendonlydir" "$DATA/redis/"appendonly.aof*
    mkdir -p "$DATA/redis"
    cp "$rdb" "$DATA/redis/dump.rdb"
    # with AOF on and no AOF files Redis would start empty: load the RDB with
    # AOF off, then turn AOF on, which rewrites it from the loaded data
    start_local_redis no
    rcli CONFIG SET appendonly yes >/dev/null
    for _ in $(seq 600); do
        info=$(rcli INFO persistence | tr -d '\r')
        if printf '%s\n' "$info" | grep -q '^aof_rewrite_in_progress:0' &&
           printf '%s\n' "$info" | grep -q '^aof_rewrite_scheduled:0' &&
           printf '%s\n' "$info" | grep -q '^aof_enabled:1'; then
            break
        fi
        sleep 0.1
    done
    printf '%s\n' "$info" | grep -q '^aof_last_bgrewrite_status:ok' || die "restore: Redis could not write its AOF (see logs/redis.log)"
    rm -f "$DATA/redis/dump.rdb"
    forget_gateway_session
}

# The snapshot's gateway session would be resumed from its old sequence
# number, and Discord would replay every event since the backup (commands
# answered already would run again): the next holder identifies afresh.
forget_gateway_session() {
    local k
    rcli --scan --pattern "$PREFIX:gw:*" 2>/dev/null | while read -r k; do
        case $k in
        *:session | *:lease) rcli DEL "$k" >/dev/null ;;
        esac
    done
}

resolve_backup_dir() {
    local arg=$1
    if [ -d "$(from_caller "$arg")" ]; then
        (cd "$(from_caller "$arg")" && pwd -P)
    elif [ -d "$BACKUPS/$arg" ]; then
        (cd "$BACKUPS/$arg" && pwd -P)
    else
        return 1
    fi
}

cmd_restore() {
    local arg=${1:-} dir
    [ -n "$arg" ] || die "usage: restore <backup dir> (a path, a name under backups/, or latest)"
    dir=$(resolve_backup_dir "$arg") || die "restore: no backup at $arg (ls $BACKUPS)"
    [ -f "$dir/postgres.dump" ] || [ -f "$dir/redis.rdb" ] || die "restore: $dir holds neither postgres.dump nor redis.rdb"
    resolve_context
    say "restore: from $dir"
    stop_instances
    mkdir -p "$LOGS" "$RUN"
    if [ -f "$dir/postgres.dump" ]; then
        if [ "$LOCAL_PG" = 1 ]; then start_local_pg; fi
        pg_args
        "$(pg_tool pg_restore)" "${PG_ARGS[@]}" --clean --if-exists --no-owner --single-transaction \
            --exit-on-error "$dir/postgres.dump" ||
            die "restore: pg_restore failed (nothing changed in PostgreSQL); the instances are stopped: $PROG start"
        say "postgresql: restored from postgres.dump"
    fi
    if [ -f "$dir/redis.rdb" ]; then
        if [ "$LOCAL_REDIS" = 1 ]; then
            restore_local_redis "$dir/redis.rdb"
            say "redis: restored from redis.rdb (AOF rewritten)"
        else
            say "redis: REDIS_URL is an external server; load $dir/redis.rdb there yourself"
        fi
    fi
    if [ -f "$dir/env.multi" ]; then
        if [ -f "$ENV_FILE" ]; then
            say "env: kept the current $ENV_FILE; the backup's copy is $dir/env.multi"
        else
            install -m 600 "$dir/env.multi" "$ENV_FILE"
            say "env: $ENV_FILE restored from the backup"
        fi
    fi
    cmd_start
}

# ---- try: talk to the sandbox -----------------------------------------------------

TRY_PY=$(cat <<'PY'
import base64, json, mimetypes, os, re, subprocess, sys, time, urllib.error, urllib.request

API, GUILD, PREFIX = os.environ["TRY_API"], os.environ["TRY_GUILD"], os.environ["TRY_PREFIX"]
OUT, DB = os.environ["TRY_OUT"], os.environ.get("TRY_DB", "")
USER = os.environ.get("TRY_USER") or "600000000000000001"
PSQL = os.environ.get("TRY_PSQL") or "psql"
channel_arg, command = sys.argv[1], sys.argv[2]
RCLI = sys.argv[3:]
ROLES = ("chat", "image", "video", "admin")
# option names and types per command, as in each role's <role>-instance/commands.c (3 string, 4 integer, 10 number, 11 attachment)
OPTIONS = {
    "채팅": [("질문", 3)], "chat": [("question", 3)],
    "초기화": [], "reset": [], "사용량": [], "usage": [],
    "채팅모드": [("모드", 3)], "chatmode": [("mode", 3)],
    "이미지": [("설명", 3), ("비율", 3), ("개수", 4)],
    "img": [("설명", 3), ("이미지", 11), ("강도", 10)],
    "비디오": [("설명", 3), ("길이", 3), ("해상도", 3)],
    "핑": [], "ping": [], "상태": [], "status": [], "인스턴스": [], "instances": [],
}
PERMS = {"상태": "8", "status": "8", "인스턴스": "8", "instances": "8", "채팅모드": "8", "chatmode": "8"}
mid = [False]


def emit(s):
    sys.stdout.write(s)
    sys.stdout.flush()
    if s:
        mid[0] = not s.endswith("\n")


def line(s=""):
    if mid[0]:
        sys.stdout.write("\n")
    sys.stdout.write(s + "\n")
    sys.stdout.flush()
    mid[0] = False


def fail(msg):
    if mid[0]:
        sys.stdout.write("\n")
        sys.stdout.flush()
    sys.stderr.write("try: %s\n" % msg)
    sys.exit(1)


def http(method, url, body=None, timeout=10):
    if url.startswith("/"):
        url = API + url
    data, headers = None, {}
    if body is not None:
        data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def jget(path):
    return json.loads(http("GET", path))


def redis(*args):
    try:
        p = subprocess.run(RCLI + ["--json"] + [str(a) for a in args], capture_output=True, text=True, timeout=10)
        return json.loads(p.stdout) if p.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def sid(s):
    a, _, b = str(s).partition("-")
    return int(a), int(b or 0)


# -- the channel
try:
    guilds = jget("/_sim/guilds").get("guilds", [])
except (OSError, ValueError) as e:
    fail("the sandbox Discord simulator does not answer at %s (%s)" % (API, e))
guild = next((g for g in guilds if str(g.get("id")) == GUILD), None)
chans = [c for c in (guild or {}).get("channels", []) if c.get("type", 0) == 0]
want = channel_arg.strip().lstrip("#")
if want.isdigit():
    cid = want
    cname = next((c["name"] for c in chans if c["id"] == want), want)
else:
    found = [c for c in chans if c.get("name") == want]
    if not found:
        fail("no channel #%s in the sandbox server; channels: %s" % (want, " ".join("#" + c["name"] for c in chans)))
    cid, cname = found[0]["id"], want

# -- the command
if not command.startswith("/"):
    fail("the command starts with a slash, e.g. '/채팅 안녕'")
parts = command[1:].split(None, 1)
if not parts or parts[0] not in OPTIONS:
    fail("unknown command %r; known: %s" % (parts[0] if parts else "", " ".join("/" + n for n in OPTIONS)))
name, rest = parts[0], (parts[1] if len(parts) > 1 else "")
spec = OPTIONS[name]
names = {o[0] for o in spec}
named, free = {}, []
for tok in rest.split():
    m = re.match(r"^([^\s:=]+)[:=](.+)$", tok)
    if m and m.group(1) in names:
        named[m.group(1)] = m.group(2)
    else:
        free.append(tok)
if free:
    first = next((o for o in spec if o[1] == 3 and o[0] not in named), None)
    if first is None:
        fail("/%s takes no free text%s" % (name, "; its options: " + " ".join(n + ":..." for n, _ in spec) if spec else ""))
    named[first[0]] = " ".join(free)
options, attachments, shown = [], [], ["/" + name]
for oname, otype in spec:
    if oname not in named:
        continue
    v = named[oname]
    if otype == 11:
        given = v[1:] if v.startswith("@") else v
        # relative to where the user ran the command (the script itself runs in the checkout)
        path = os.path.join(os.environ.get("TRY_CWD") or ".", os.path.expanduser(given))
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            fail("cannot read %s: %s" % (given, e.strerror or e))
        attachments.append({"name": oname, "filename": os.path.basename(path),
                            "content_type": mimetypes.guess_type(path)[0] or "application/octet-stream",
                            "data_b64": base64.b64encode(data).decode()})
        shown.append("%s:@%s" % (oname, given))
        continue
    try:
        value = int(v) if otype == 4 else float(v) if otype == 10 else v
    except ValueError:
        fail("option %s needs a number, not %r" % (oname, v))
    options.append({"name": oname, "type": otype, "value": value})
    shown.append("%s:%s" % (oname, json.dumps(value, ensure_ascii=False) if " " in str(value) else value))

# -- an instance must hold the gateway, or the interaction waits past its ack window
t0 = time.time()
said = False
while True:
    try:
        sessions = jget("/_sim/gateway").get("sessions", [])
    except (OSError, ValueError):
        sessions = []
    if any(s.get("state") == "active" and s.get("connected") for s in sessions):
        break
    if not said:
        line("waiting for an instance to hold the sandbox gateway...")
        said = True
    if time.time() - t0 > 30:
        fail("no instance is connected to the sandbox gateway after 30 s (see status and logs)")
    time.sleep(0.25)

body = {"name": name, "guild_id": GUILD, "channel_id": cid, "locale": "ko", "options": options,
        "user": {"id": USER, "username": "sandbox-user", "global_name": "Sandbox User"}}
if name in PERMS:
    body["permissions"] = PERMS[name]
if attachments:
    body["attachments"] = attachments
try:
    iid = json.loads(http("POST", "/_sim/interactions", body, timeout=30))["id"]
except (OSError, ValueError, KeyError) as e:
    fail("the simulator refused the interaction: %s" % e)
line("→ %s in #%s (interaction %s)" % (" ".join(str(s) for s in shown), cname, iid))

is_video = name == "비디오"
limit = float(os.environ.get("TRY_TIMEOUT") or (300 if is_video else 120))
printed = {}
current = [None]


def messages(st):
    out = []
    if st.get("original"):
        out.append(("original", st["original"]))
    for i, f in enumerate(st.get("followups") or []):
        out.append((f.get("id") or "followup-%d" % i, f))
    return out


def render(st):
    for key, m in messages(st):
        if m.get("loading") or m.get("deleted"):
            continue
        text = m.get("content") or ""
        old = printed.get(key)
        if old is None and not text:
            continue
        if old == text:
            continue
        label = "" if key == "original" else "[followup] "
        if not text:  # the text was removed (an embed or a file took its place)
            printed[key] = text
            continue
        if old is not None and current[0] == key and text.startswith(old):
            emit(text[len(old):])
        elif old is None and current[0] is None and not mid[0]:
            emit(label + text)
        else:
            line()
            emit(label + ("(edited) " if old is not None else "") + text)
        printed[key] = text
        current[0] = key


def answered(st):
    for _k, m in messages(st or {}):
        if not m.get("loading") and not m.get("deleted") and (m.get("content") or m.get("embeds") or m.get("attachments")):
            return True
    return False


def find_entry():
    for role in ROLES:
        rows = redis("XREVRANGE", "%s:jobs:%s" % (PREFIX, role), "+", "-", "COUNT", "500")
        for row in rows if isinstance(rows, list) else []:
            try:
                eid, flat = row[0], row[1]
                payload = json.loads(dict(zip(flat[::2], flat[1::2])).get("payload") or "{}")
            except (IndexError, TypeError, ValueError):
                continue
            if isinstance(payload, dict) and str(payload.get("id")) == iid:
                return role, eid
    return None


def entry_done(role, eid):
    key = "%s:jobs:%s" % (PREFIX, role)
    last = None
    groups = redis("XINFO", "GROUPS", key)
    for g in groups if isinstance(groups, list) else []:
        d = g if isinstance(g, dict) else dict(zip(g[::2], g[1::2]))
        if d.get("name") == "workers":
            last = d.get("last-delivered-id")
    if not last or sid(last) < sid(eid):
        return False
    return redis("XPENDING", key, "workers", eid, eid, "1") == []


def video_state():
    if not DB:
        return None
    try:
        p = subprocess.run([PSQL, DB, "-Atqc", "SELECT state FROM jobs WHERE idempotency_key = '%s'" % iid],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() or None


entry, st, snap, changed, finished = None, None, None, time.time(), None
while True:
    now = time.time()
    try:
        st = jget("/_sim/interactions/%s" % iid)
    except (OSError, ValueError):
        pass
    if st:
        render(st)
        s = json.dumps([m for _k, m in messages(st)], sort_keys=True, default=str)
        if s != snap:
            snap, changed = s, now
    done = False
    if st and (st.get("acked") or {}).get("type") == 4:
        done = True  # answered at once, no job
    elif is_video:
        done = video_state() in ("done", "failed") or (not DB and answered(st) and now - changed > 5)
    else:
        if entry is None:
            entry = find_entry()
        if entry is not None:
            if finished is None and entry_done(*entry):
                finished = now
            done = finished is not None and (answered(st) or now - finished > 5)
        elif now - t0 > 10 and answered(st) and now - changed > 3:
            done = True  # the job is not to be found: the answer stopped changing
    if done:
        break
    if now - t0 > limit:
        fail("no complete answer after %d s" % limit)
    time.sleep(0.25)

st = jget("/_sim/interactions/%s" % iid)
render(st)
if mid[0]:
    emit("\n")
for key, m in messages(st):
    for e in m.get("embeds") or []:
        line("[embed] %s" % (e.get("title") or ""))
        for l in (e.get("description") or "").splitlines():
            line("  " + l)
        for f in e.get("fields") or []:
            line("  %s:" % f.get("name", ""))
            for l in (f.get("value") or "").splitlines():
                line("    " + l)
        if (e.get("footer") or {}).get("text"):
            line("  -- " + e["footer"]["text"])
    for a in m.get("attachments") or []:
        os.makedirs(OUT, exist_ok=True)
        fn = re.sub(r"[^\w.\-]", "_", a.get("filename") or "file")
        path = os.path.join(OUT, "%s-%s" % (iid, fn))
        try:
            data = http("GET", a["url"], timeout=120)
        except (OSError, KeyError) as e:
            line("[file] %s: download failed (%s)" % (fn, e))
            continue
        with open(path, "wb") as f:
            f.write(data)
        line("[file] %s (%d bytes, %s)" % (path, len(data), a.get("content_type") or "?"))
for e in st.get("errors") or []:
    line("[discord error] %s %s %s" % (e.get("status"), e.get("code"), e.get("message")))
if not answered(st):
    fail("the job finished but no answer reached the sandbox")
who = ""
if entry is not None:
    hb, tm = redis("XREVRANGE", PREFIX + ":heartbeats", "+", "-", "COUNT", "50"), redis("TIME")
    try:
        now_ms = int(tm[0]) * 1000 + int(tm[1]) // 1000
        seen, servers = set(), []
        for eid, flat in hb:
            f = dict(zip(flat[::2], flat[1::2]))
            if f.get("name") in seen:
                continue
            seen.add(f.get("name"))
            fo = int(os.environ.get("TRY_FO") or 3000)
            if now_ms - sid(eid)[0] < fo and f.get("state") == "running" and entry[0] in (f.get("serving") or "").split(","):
                servers.append(f["name"] + ("" if f.get("role") == entry[0] else " (takeover)"))
        if servers:
            who = "; the %s role is served by %s" % (entry[0], ", ".join(sorted(servers)))
    except (TypeError, ValueError, IndexError):
        pass
line("answered in %.1f s%s%s" % (time.time() - t0, " (only the caller sees it)" if (st.get("original") or {}).get("ephemeral") else "", who))
PY
)

cmd_try() {
    local user="" timeout="" args=()
    while [ $# -gt 0 ]; do
        case $1 in
        --user) [ $# -ge 2 ] || die "try: --user needs an id"; user=$2; shift ;;
        --user=*) user=${1#--user=} ;;
        --timeout) [ $# -ge 2 ] || die "try: --timeout needs seconds"; timeout=$2; shift ;;
        --timeout=*) timeout=${1#--timeout=} ;;
        *) args+=("$1") ;;
        esac
        shift
    done
    [ ${#args[@]} = 2 ] || die "usage: try '#channel' '/command text [option:value ...]'  e.g. try '#채팅방-1' '/채팅 안녕'"
    alive "$RUN/discord-sim.pid" ||
        die "try talks to the sandbox, which is not running here (start it: $PROG start --sandbox, or start without DISCORD_TOKEN)"
    resolve_context
    TRY_API=http://127.0.0.1:$SANDBOX_PORT TRY_GUILD=$SANDBOX_GUILD TRY_PREFIX=$PREFIX TRY_OUT=$TRY_OUT TRY_CWD=$CALLER_PWD \
        TRY_DB=$DATABASE_URL_EFF TRY_USER=$user TRY_TIMEOUT=$timeout TRY_FO=$(failover_ms) TRY_PSQL=$(pg_tool psql) \
        "$PY" -c "$TRY_PY" "${args[@]}" "${RCLI_ARGV[@]}"
}

# ---- chaos ------------------------------------------------------------------------

chaos_explain() {
    local role=$1 name=$2 taker
    if [ "$role" = admin ]; then taker="the lowest-numbered live instance (chat-1)"; else taker=admin-4; fi
    say "The others see it down FAILOVER_AFTER_MS ($(failover_ms) ms) after its last heartbeat; then"
    say "$taker serves the $role role, the jobs $name held included."
    say "Watch it:"
    say "  $PROG status                   # $role → ${taker%% *} (takeover)"
    say "  $PROG logs | grep routing      # the takeover, later the handback"
    case $role in
    chat) say "  $PROG try '#채팅방-1' '/채팅 아직 거기 있어?'" ;;
    image) say "  $PROG try '#이미지생성-1' '/이미지 고양이'" ;;
    video) say "  $PROG try '#비디오생성-1' '/비디오 파도'" ;;
    admin) say "  $PROG try '#일반' '/상태'" ;;
    esac
    say "Bring it back: $PROG start     # starts only what is not running; the role is handed back"
}

cmd_chaos() {
    local which=${1:-} role pf pid
    [ -n "$which" ] || die "usage: chaos <instance> (chat, image, video, admin, or chat-1 ...)"
    role=$(role_of_arg "$which") || die "chaos: unknown instance '$which' (chat, image, video, admin, chat-1 ...)"
    pf=$(pidfile_of "$role")
    alive "$pf" || die "chaos: $(name_of "$role") is not running"
    pid=$(cat "$pf")
    kill -KILL "$pid"
    say "chaos: killed $(name_of "$role") (pid $pid) with SIGKILL: no drain, no goodbye"
    chaos_explain "$role" "$(name_of "$role")"
}

# ---- compose mode ----------------------------------------------------------------
# The same subcommands through docker compose -f compose/docker-compose.multi.yml
# (services valkey, postgres, discord-bot-chat/image/video/admin).

# DC: Compose v2 (`docker compose`) when it works, else docker-compose 1.x
# (Debian 12 packages 1.29, not v2). Fails when neither is there.
compose_cli() {
    [ ${#DC[@]} != 0 ] && return 0
    if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
        DC=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1 && docker-compose version >/dev/null 2>&1; then
        DC=(docker-compose)
    else
        return 1
    fi
}

# "docker compose 2.29.1" / "docker-compose 1.29.2"
compose_cli_word() {
    local v
    v=$("${DC[@]}" version --short 2>/dev/null) || v=""
    printf '%s %s' "${DC[*]}" "${v:-(version unknown)}"
}

# --env-file gives the compose file its ${...} values (POSTGRES_PASSWORD ...);
# the bots read $ENV_FILE themselves (env_file: ${DISCORDBOT_ENV_FILE}), and
# -p names the project (its volumes: discordbot_postgres-data ...).
dc() {
    compose_cli || die "compose mode needs docker compose (v2) or docker-compose (1.29)"
    local files=() f
    for f in "${COMPOSE_FILES[@]}"; do files+=(-f "$f"); done
    if [ -f "$ENV_FILE" ]; then
        # env_file paths are relative to the compose file: give an absolute one
        local ef=$ENV_FILE
        case $ef in /*) ;; *) ef=$ROOT/$ef ;; esac
        DISCORDBOT_ENV_FILE=${DISCORDBOT_ENV_FILE:-$ef} \
            "${DC[@]}" -p "$COMPOSE_PROJECT" --env-file "$ENV_FILE" "${files[@]}" "$@"
    else
        "${DC[@]}" -p "$COMPOSE_PROJECT" "${files[@]}" "$@"
    fi
}

compose_wait_healthy() {
    local r port
    for r in "$@"; do
        port=$(port_of "$r")
        for _ in $(seq 120); do
            [ "$(health_code "$port")" = 200 ] && continue 2
            sleep 0.5
        done
        warn "$(svc_of "$r") not healthy on port $port after 60 s (compose logs $(svc_of "$r"))"
        return 1
    done
}

compose_start() {
    local a
    for a in "$@"; do
        case $a in --sandbox) die "the sandbox runs in native mode only: $PROG --native start --sandbox" ;; esac
    done
    if [ ! -f "$ENV_FILE" ]; then
        install -m 600 "$ROOT/.env.multi.example" "$ENV_FILE"
        say "note: created $ENV_FILE from .env.multi.example; put your keys in it"
    fi
    check_env_perms
    resolve_context
    report_keys
    feature_report 0
    # the containers read the file as it is: a placeholder would stop them
    local key bad=()
    for key in "${KEYS[@]}"; do
        if [ "$(key_state "$key")" = example ]; then bad+=("$key"); fi
    done
    if [ ${#bad[@]} != 0 ]; then
        say "still the example value in $ENV_FILE (the instances would refuse to start): $(join_list "${bad[@]}")"
        say "put the real value in, or empty the line (KEY=) to turn that feature off"
        exit 2
    fi
    KEY_OVERRIDES=()
    if [ -x "$(bin_of chat)" ]; then
        check_config || exit 2
    fi
    dc up -d
    compose_wait_healthy "${ROLES[@]}" || true
    cmd_status
}

compose_status() {
    dc ps
    say
    cmd_status
}

compose_logs() {
    local follow=auto n="" which="" args=(logs --no-color) r
    while [ $# -gt 0 ]; do
        case $1 in
        -f | --follow) follow=1 ;;
        --no-follow) follow=0 ;;
        -n | --lines) n=$2; shift ;;
        -n* | --lines=*) n=${1#-n}; n=${n#--lines=} ;;
        *) which=$1 ;;
        esac
        shift
    done
    if [ "$follow" = auto ]; then
        if [ -t 1 ]; then follow=1; else follow=0; fi
    fi
    [ "$follow" = 1 ] && args+=(--follow)
    [ -n "$n" ] && args+=(--tail "$n")
    if [ -n "$which" ]; then
        if r=$(role_of_arg "$which"); then args+=("$(svc_of "$r")"); else args+=("$which"); fi
    else
        for r in "${ROLES[@]}"; do args+=("$(svc_of "$r")"); done
    fi
    dc "${args[@]}"
}

compose_update() {
    local pull=1 a r
    for a in "$@"; do
        case $a in
        --no-pull) pull=0 ;;
        --no-build) ;;
        *) die "update: unknown option $a" ;;
        esac
    done
    if [ $pull = 1 ]; then git_pull; fi
    dc build
    if [ "${DC[*]}" = "docker compose" ]; then
        dc pull --ignore-buildable --quiet || true
    else
        dc pull --ignore-pull-failures --quiet || true    # 1.29 has no --ignore-buildable
    fi
    resolve_context
    for r in "${ROLES[@]}"; do
        say "update: $(svc_of "$r"): recreating (it drains on SIGTERM within its stop_grace_period)"
        dc up -d --no-deps --force-recreate "$(svc_of "$r")"
        compose_wait_healthy "$r" || die "update: $(svc_of "$r") did not come back healthy; the others still run"
        wait_role_home "$r" "$(name_of "$r")" 20 || say "update: $(name_of "$r") healthy; its role was not handed back yet"
    done
    say "update: done"
    compose_status
}

compose_backup() {
    umask 077
    resolve_context
    local dir
    dir=$(new_backup_dir)
    # shellcheck disable=SC2016 # expanded by the container's shell
    dc exec -T postgres sh -c 'pg_dump -U "${POSTGRES_USER:-postgres}" -d "${POSTGRES_DB:-${POSTGRES_USER:-postgres}}" -Fc' \
        >"$dir/postgres.dump" || die "backup: pg_dump in the postgres service failed"
    dc exec -T valkey sh -c \
        'valkey-cli --rdb /tmp/backup.rdb >/dev/null 2>&1 && cat /tmp/backup.rdb && rm -f /tmp/backup.rdb' \
        >"$dir/redis.rdb" || die "backup: the Valkey snapshot failed"
    if [ -f "$ENV_FILE" ]; then cp "$ENV_FILE" "$dir/env.multi"; fi
    finish_backup "$dir"
}

compose_restore() {
    local arg=${1:-} dir r svcs=()
    [ -n "$arg" ] || die "usage: restore <backup dir> (a path, a name under backups/, or latest)"
    dir=$(resolve_backup_dir "$arg") || die "restore: no backup at $arg"
    for r in "${ROLES[@]}"; do svcs+=("$(svc_of "$r")"); done
    say "restore: from $dir"
    dc stop -t $(($(drain_sec) + 5)) "${svcs[@]}"
    if [ -f "$dir/postgres.dump" ]; then
        dc up -d postgres
        # shellcheck disable=SC2016 # expanded by the container's shell
        dc exec -T postgres sh -c 'pg_restore --clean --if-exists --no-owner --single-transaction --exit-on-error -U "${POSTGRES_USER:-postgres}" -d "${POSTGRES_DB:-${POSTGRES_USER:-postgres}}"' \
            <"$dir/postgres.dump" || die "restore: pg_restore failed; the bots are stopped ($PROG start)"
        say "postgresql: restored"
    fi
    if [ -f "$dir/redis.rdb" ]; then
        dc stop valkey
        dc run --rm --no-deps -T --entrypoint sh valkey -c 'rm -rf /data/appendonlydir /data/appendonly.aof* && cat >/data/dump.rdb' \
            <"$dir/redis.rdb"
        # load the RDB with AOF off, turn AOF on (rewritten from the data), stop
        dc run --rm --no-deps -T --entrypoint sh valkey -c 'valkey-server --dir /data --port 6390 --appendonly no --save "" --daemonize yes &&
            until valkey-cli -p 6390 ping >/dev/null 2>&1; do sleep 0.2; done &&
            valkey-cli -p 6390 config set appendonly yes >/dev/null &&
            while valkey-cli -p 6390 info persistence | grep -Eq "aof_rewrite_(in_progress|scheduled):1"; do sleep 0.2; done &&
            valkey-cli -p 6390 shutdown >/dev/null 2>&1; rm -f /data/dump.rdb'
        dc up -d valkey
        resolve_context
        forget_gateway_session
        say "valkey: restored"
    fi
    if [ -f "$dir/env.multi" ]; then
        if [ -f "$ENV_FILE" ]; then
            say "env: kept the current $ENV_FILE; the backup's copy is $dir/env.multi"
        else
            install -m 600 "$dir/env.multi" "$ENV_FILE"
            say "env: $ENV_FILE restored from the backup"
        fi
    fi
    compose_start
}

compose_cleanup() {
    local yes=0 a
    for a in "$@"; do case $a in --yes | -y) yes=1 ;; *) die "cleanup: unknown option $a" ;; esac; done
    if [ $yes = 0 ]; then
        say "cleanup runs ${DC[*]} down -v: the containers and their volumes (Valkey and"
        say "PostgreSQL data) are deleted; $BACKUPS and $ENV_FILE stay."
        confirm cleanup || { say "cleanup: cancelled"; return 1; }
    fi
    dc down -v --remove-orphans
    rm -rf -- "$LOGS" "$TRY_OUT"
}

compose_chaos() {
    local which=${1:-} role
    [ -n "$which" ] || die "usage: chaos <instance> (chat, image, video, admin, or chat-1 ...)"
    role=$(role_of_arg "$which") || die "chaos: unknown instance '$which'"
    dc kill -s SIGKILL "$(svc_of "$role")"
    # Docker and podman count a kill through their API as a manual stop
    say "chaos: killed $(svc_of "$role") with SIGKILL (docker counts a kill as a manual stop: its restart policy leaves it down)"
    chaos_explain "$role" "$(name_of "$role")"
}

compose_dispatch() {
    local cmd=$1
    shift
    compose_cli || die "compose mode needs 'docker compose' (the v2 plugin) or 'docker-compose' (1.29, Debian's package); neither works here (or use --native)"
    local f
    for f in "${COMPOSE_FILES[@]}"; do [ -f "$f" ] || die "compose mode: $f is missing"; done
    warn "compose mode through $(compose_cli_word), project $COMPOSE_PROJECT"
    case $cmd in
    start) compose_start "$@" ;;
    stop) dc stop -t $(($(drain_sec) + 5)) ;;
    restart) dc stop -t $(($(drain_sec) + 5)); compose_start "$@" ;;
    status) compose_status ;;
    health) cmd_health ;;
    logs) compose_logs "$@" ;;
    update) compose_update "$@" ;;
    cleanup) compose_cleanup "$@" ;;
    backup) compose_backup ;;
    restore) compose_restore "$@" ;;
    try) die "try talks to the sandbox's Discord simulator, which runs in native mode only ($PROG --native start --sandbox)" ;;
    chaos) compose_chaos "$@" ;;
    *) usage >&2; exit 2 ;;
    esac
}

# ---- mode, menu, dispatch ---------------------------------------------------------

native_running() {
    local f
    for f in "$RUN"/*.pid; do
        [ -e "$f" ] && alive "$f" && return 0
    done
    return 1
}

pick_mode() {
    case $MODE in
    native | compose) return 0 ;;
    auto | "") ;;
    *) die "DEPLOY_MODE must be auto, native or compose (not '$MODE')" ;;
    esac
    MODE=native
    native_running && return 0
    # the sandbox (no Discord token) runs natively only
    local token
    token=$(setting DISCORD_TOKEN)
    [ -n "$token" ] || [ -n "$(setting DISCORD_TOKEN_FILE)" ] || return 0
    case $token in *your-* | *example*) return 0 ;; esac
    [ -f "${COMPOSE_FILES[0]}" ] || return 0
    command -v docker >/dev/null 2>&1 || return 0
    compose_cli || return 0
    docker info >/dev/null 2>&1 || return 0
    MODE=compose
    warn "compose mode ($COMPOSE_FILE, ${DC[*]}); use --native for the native cluster"
}

usage() {
    cat <<EOF
usage: $PROG [--native|--compose] <command> [args]

  start [--sandbox]        validate .env.multi, install what is missing, build, and
                           start what is not running: local Redis/PostgreSQL, the
                           sandbox (no DISCORD_TOKEN, or --sandbox), the 4 instances
  stop                     drain every instance, then stop Redis/PostgreSQL/sandbox
  restart [--sandbox]      stop, then start
  status                   instance, role, pid, port, health, uptime, processed,
                           failed, and who serves each role now (takeovers);
                           exit non-zero if any instance is unhealthy
  health                   exit non-zero if any instance is unhealthy
  logs [-f|--no-follow] [-n N] [instance]
                           the instances' logs merged, each line prefixed
                           ([chat-1] ...); follows when stdout is a terminal
  update [--no-pull] [--no-build]
                           git pull --ff-only, make, then restart one instance at
                           a time (admin last) without losing a job
  backup                   PostgreSQL dump, Redis snapshot and .env.multi into
                           backups/<timestamp>/ (backups/latest points at it)
  restore <dir|latest>     stop, put a backup back, start
  cleanup [--yes]          stop, delete data/, logs/ and try-output/ (asks first)
  try '#channel' '/command text [option:value ...]' [--user ID]
                           send a command to the sandbox as a user, print the
                           answer, save its files in try-output/
  chaos <instance>         kill -9 one instance (chat, image-2, ...) and watch the
                           takeover
  help                     this text

Without a command, from a terminal: a numbered menu.
--compose runs the same through docker compose (or docker-compose 1.29) -f
compose/docker-compose.multi.yml, project COMPOSE_PROJECT_NAME (discordbot); chosen
by itself when a Discord token is set, compose and its engine work and no native
cluster runs here.
Environment: ENV_FILE, DEPLOY_STATE_DIR, DEPLOY_MODE (auto|native|compose),
LOCAL_REDIS_PORT, LOCAL_PG_PORT, CHAT_HEALTH_PORT..ADMIN_HEALTH_PORT,
SANDBOX_DISCORD_PORT, SANDBOX_OPENAI_PORT, SANDBOX_MINIMAX_PORT,
SANDBOX_STABILITY_PORT, COMPOSE_FILE (file[:override...]), COMPOSE_PROJECT_NAME, STATUS_TIMEOUT.
Everything: docs/deploy.md
EOF
}

dispatch() {
    local cmd=$1
    shift
    case $cmd in
    -h | --help | help) usage; return 0 ;;
    esac
    pick_mode
    case $cmd in
    # a reader that goes away (| head) must not stop these halfway
    start | stop | restart | update | cleanup | backup | restore) trap '' PIPE ;;
    esac
    if [ "$MODE" = compose ]; then
        compose_dispatch "$cmd" "$@"
        return
    fi
    case $cmd in
    start) cmd_start "$@" ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start "$@" ;;
    status) cmd_status ;;
    health) cmd_health ;;
    logs) cmd_logs "$@" ;;
    update) cmd_update "$@" ;;
    cleanup) cmd_cleanup "$@" ;;
    backup) cmd_backup ;;
    restore) cmd_restore "$@" ;;
    try) cmd_try "$@" ;;
    chaos) cmd_chaos "$@" ;;
    *) usage >&2; exit 2 ;;
    esac
}

# menu_ask VAR PROMPT [DEFAULT]: one answer (DEFAULT when empty); false at end of input
menu_ask() {
    local _ans=""
    read -r -p "$2" _ans || return 1
    printf -v "$1" '%s' "${_ans:-${3:-}}"
}

menu() {
    local choice inst rc mode_word chan cmd
    # Ctrl-C ends the running action (logs -f), not the menu
    trap ':' INT
    while true; do
        ENVV_STATE=unread # .env.multi may have been edited since the last action
        mode_word=${MODE}
        [ "$mode_word" = auto ] && mode_word="auto: native unless docker compose"
        cat <<EOF

Discord bot cluster ($mode_word; state in $STATE)
  1) start     2) stop      3) restart
  4) status    5) logs      6) health
  7) update    8) backup    9) restore
 10) try      11) chaos    12) cleanup
  0) quit
EOF
        read -r -p "choice: " choice || { say; return 0; }
        rc=0
        case $choice in
        1) (dispatch start) || rc=$? ;;
        2) (dispatch stop) || rc=$? ;;
        3) (dispatch restart) || rc=$? ;;
        4) (dispatch status) || rc=$? ;;
        5)
            menu_ask inst "instance (chat, image, video, admin; empty: all): " || inst=""
            say "(Ctrl-C returns to the menu)"
            if [ -n "$inst" ]; then (dispatch logs --follow "$inst") || rc=$?; else (dispatch logs --follow) || rc=$?; fi
            ;;
        6) (dispatch health) || rc=$? ;;
        7) (dispatch update) || rc=$? ;;
        8) (dispatch backup) || rc=$? ;;
        9)
            if [ -d "$BACKUPS" ]; then
                say "backups in $BACKUPS:"
                find "$BACKUPS" -mindepth 1 -maxdepth 1 -printf '  %f\n' 2>/dev/null | sort
            fi
            if menu_ask inst "restore which backup (a name above or a path; empty: latest): " latest; then
                (dispatch restore "$inst") || rc=$?
            fi
            ;;
        10)
            say "e.g. #채팅방-1 /채팅 안녕 · #이미지생성-1 /이미지 고양이 · #이미지생성-1 /img 수채화로 이미지:@photo.png"
            say "     #비디오생성-1 /비디오 파도 · #일반 /핑 · #일반 /상태 · #일반 /사용량"
            if menu_ask chan "channel (empty: #채팅방-1): " "#채팅방-1" && menu_ask cmd "command: " && [ -n "$cmd" ]; then
                (dispatch try "$chan" "$cmd") || rc=$?
            fi
            ;;
        11)
            if menu_ask inst "kill -9 which instance (chat, image, video, admin): " && [ -n "$inst" ]; then
                (dispatch chaos "$inst") || rc=$?
            fi
            ;;
        12) (dispatch cleanup) || rc=$? ;;
        0 | q | quit | exit) return 0 ;;
        '') continue ;;
        *) say "choose 0-12" ;;
        esac
        [ "$rc" = 0 ] || say "(exit status $rc)"
    done
}

main() {
    local args=() a
    for a in "$@"; do
        case $a in
        --compose) MODE=compose ;;
        --native) MODE=native ;;
        *) args+=("$a") ;;
        esac
    done
    if [ ${#args[@]} = 0 ]; then
        if [ -t 0 ]; then
            menu
            exit 0
        fi
        usage >&2
        exit 2
    fi
    dispatch "${args[@]}"
}

main "$@"
