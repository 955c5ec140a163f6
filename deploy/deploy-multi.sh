#!/usr/bin/env bash
# deploy-multi.sh: run the four-instance cluster on this machine.
#
#   ./deploy/deploy-multi.sh start [--sandbox]
#                                      install what is missing, build, start; with no
#                                      DISCORD_TOKEN (or --sandbox) also the local Discord
#                                      simulator, with a server "sandbox" and its channels
#   ./deploy/deploy-multi.sh stop      drain every instance, then stop
#   ./deploy/deploy-multi.sh restart
#   ./deploy/deploy-multi.sh status    table: instance, role, pid, port, health, uptime
#   ./deploy/deploy-multi.sh health    exit non-zero if any instance is unhealthy
#   ./deploy/deploy-multi.sh logs [instance]   follow the logs, each line prefixed
#
# Settings come from .env.multi (see deploy/env.multi.example); the
# environment overrides it. Without REDIS_URL / DATABASE_URL a local Redis
# (AOF on, port LOCAL_REDIS_PORT=56379) and PostgreSQL (LOCAL_PG_PORT=55432)
# are started with their data under ./data/. Health ports are 8001-8004
# unless CHAT_HEALTH_PORT ... ADMIN_HEALTH_PORT say otherwise;
# DEPLOY_STATE_DIR moves data/ and logs/ elsewhere.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ENV_FILE=${ENV_FILE:-$ROOT/.env.multi}
STATE=${DEPLOY_STATE_DIR:-$ROOT}   # where data/ and logs/ live
DATA=$STATE/data
LOGS=$STATE/logs
RUN=$DATA/run
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
SANDBOX=0

say() { printf '%s\n' "$*"; }
die() { printf 'deploy-multi: %s\n' "$*" >&2; exit 1; }

# Value of KEY: the environment first, then the last KEY= line of the env
# file (quotes removed). Never printed by this script when it is a secret.
setting() {
    local key=$1 val=""
    if [ -n "${!key+x}" ]; then
        printf '%s' "${!key}"
        return
    fi
    if [ -f "$ENV_FILE" ]; then
        val=$(grep -E "^[[:space:]]*(export[[:space:]]+)?${key}[[:space:]]*=" "$ENV_FILE" | tail -n 1 |
              sed -E "s/^[^=]*=[[:space:]]*//; s/[[:space:]]+#.*$//; s/^\"(.*)\"$/\\1/; s/^'(.*)'$/\\1/") || true
    fi
    printf '%s' "$val"
}

role_number() { case $1 in chat) echo 1 ;; image) echo 2 ;; video) echo 3 ;; admin) echo 4 ;; esac; }

port_of() {
    # HEALTH_PORT in the env file applies to every instance, so the per-role
    # defaults (8001-8004) are what the cluster uses unless <ROLE>_HEALTH_PORT
    # is set here.
    local role=$1 up
    up=$(echo "$role" | tr a-z A-Z)
    local p
    p=$(setting "${up}_HEALTH_PORT")
    echo "${p:-$((8000 + $(role_number "$role")))}"
}

bin_of() { echo "$ROOT/$1-instance/$1-instance"; }
pidfile_of() { echo "$RUN/$1.pid"; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

ensure_built() {
    "$ROOT/deploy/install-deps.sh"
    local missing=0
    for r in "${ROLES[@]}"; do [ -x "$(bin_of "$r")" ] || missing=1; done
    if [ $missing = 1 ] || [ -n "$(find common "${ROLES[@]/%/-instance}" -newer "$(bin_of admin)" -name '*.[ch]' 2>/dev/null | head -n 1)" ]; then
        say "building..."
        make -j"$(nproc)" bins >/dev/null
    fi
}

# ---- local redis ------------------------------------------------------------

start_local_redis() {
    mkdir -p "$DATA/redis" "$RUN"
    if alive "$RUN/redis.pid"; then return; fi
    redis-server --bind 127.0.0.1 --port "$LOCAL_REDIS_PORT" --dir "$DATA/redis" \
        --appendonly yes --save '' --daemonize yes --pidfile "$RUN/redis.pid" \
        --logfile "$LOGS/redis.log" >/dev/null
    for _ in $(seq 50); do
        redis-cli -p "$LOCAL_REDIS_PORT" ping >/dev/null 2>&1 && return
        sleep 0.1
    done
    die "local redis did not start (see logs/redis.log)"
}

stop_local_redis() {
    alive "$RUN/redis.pid" || return 0
    redis-cli -p "$LOCAL_REDIS_PORT" shutdown >/dev/null 2>&1 || kill "$(cat "$RUN/redis.pid")"
    rm -f "$RUN/redis.pid"
}

# ---- local postgresql ----------------------------------------------------------

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

as_pg_user() {
    if [ "$(id -u)" = 0 ]; then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}

start_local_pg() {
    local bin
    bin=$(pg_bin)
    [ -n "$bin" ] || die "PostgreSQL server binaries not found; run ./deploy/install-deps.sh"
    mkdir -p "$DATA/pg" "$RUN"
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
        [ "$(id -u)" = 0 ] && chown "$PG_OS_USER" "$LOGS/postgres.log"
        as_pg_user "$bin/pg_ctl" -D "$DATA/pg/db" -w -t 60 -l "$LOGS/postgres.log" \
            -o "-c listen_addresses=127.0.0.1 -p $LOCAL_PG_PORT -k $DATA/pg" start >/dev/null ||
            die "postgresql did not start (see logs/postgres.log)"
    fi
    as_pg_user "$bin/psql" -h 127.0.0.1 -p "$LOCAL_PG_PORT" -U discordbot -d postgres -Atqc \
        "SELECT 1 FROM pg_database WHERE datname='discordbot'" | grep -q 1 ||
        as_pg_user "$bin/createdb" -h 127.0.0.1 -p "$LOCAL_PG_PORT" -U discordbot discordbot
}

stop_local_pg() {
    local bin
    bin=$(pg_bin)
    [ -n "$bin" ] && [ -f "$DATA/pg/db/PG_VERSION" ] || return 0
    as_pg_user "$bin/pg_ctl" -D "$DATA/pg/db" status >/dev/null 2>&1 || return 0
    as_pg_user "$bin/pg_ctl" -D "$DATA/pg/db" -m fast -w stop >/dev/null
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
    if [ -z "$(setting OPENAI_API_KEY_1)" ] && [ -z "$(setting OPENAI_API_KEY_1_FILE)" ]; then
        start_provider_sim openai-sim openai_sim.py "$SANDBOX_AI_PORT" "$SANDBOX_AI_KEY"
        SANDBOX_AI=1
        say "sandbox: OpenAI-compatible simulator on port $SANDBOX_AI_PORT (answers echo the question)"
    fi
    if [ -z "$(setting MINIMAX_API_KEY_2)" ] && [ -z "$(setting MINIMAX_API_KEY_2_FILE)" ]; then
        start_provider_sim minimax-sim minimax_sim.py "$SANDBOX_MM_PORT" "$SANDBOX_MM_KEY"
        SANDBOX_MM=1
        say "sandbox: MiniMax simulator on port $SANDBOX_MM_PORT (images and videos, generated locally)"
    fi
    if [ -z "$(setting STABILITY_API_KEY_2)" ] && [ -z "$(setting STABILITY_API_KEY_2_FILE)" ]; then
        start_provider_sim stability-sim stability_sim.py "$SANDBOX_ST_PORT" "$SANDBOX_ST_KEY"
        SANDBOX_ST=1
        say "sandbox: Stability simulator on port $SANDBOX_ST_PORT"
    fi
    SANDBOX_KEY=$(curl -s "http://127.0.0.1:$SANDBOX_PORT/_sim/info" |
                  python3 -c 'import json,sys; print(json.load(sys.stdin)["public_key_hex"])')
    SANDBOX=1
    say "sandbox: Discord simulator on port $SANDBOX_PORT (server \"sandbox\", channels 채팅방-1, ai-지원,"
    say "         이미지생성-1, 갤러리, 비디오생성-1, 일반); control API: http://127.0.0.1:$SANDBOX_PORT/_sim/info"
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

stop_sandbox() {
    for sim in discord-sim openai-sim minimax-sim stability-sim; do
        alive "$RUN/$sim.pid" || continue
        kill -TERM "$(cat "$RUN/$sim.pid")" 2>/dev/null || true
        rm -f "$RUN/$sim.pid"
    done
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
        for n in 1 2 3 4; do sandbox_env+=(OPENAI_API_KEY_$n="$SANDBOX_AI_KEY"); done
    fi
    if [ "$SANDBOX_MM" = 1 ]; then
        sandbox_env+=(MINIMAX_BASE_URL="http://127.0.0.1:$SANDBOX_MM_PORT")
        for n in 1 2 3 4; do sandbox_env+=(MINIMAX_API_KEY_$n="$SANDBOX_MM_KEY"); done
    fi
    if [ "$SANDBOX_ST" = 1 ]; then
        sandbox_env+=(STABILITY_BASE_URL="http://127.0.0.1:$SANDBOX_ST_PORT")
        for n in 1 2 3 4; do sandbox_env+=(STABILITY_API_KEY_$n="$SANDBOX_ST_KEY"); done
    fi
    local video_dir
    video_dir=$(setting VIDEO_DIR)
    [ -n "$video_dir" ] || video_dir=$DATA/videos
    env REDIS_URL="$REDIS_URL_EFF" DATABASE_URL="$DATABASE_URL_EFF" HEALTH_PORT="$port" VIDEO_DIR="$video_dir" \
        "${sandbox_env[@]}" \
        nohup "$(bin_of "$role")" "${args[@]}" >>"$LOGS/$role.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
}

wait_healthy() {
    local role=$1 port code
    port=$(port_of "$role")
    for _ in $(seq 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health" || true)
        [ "$code" = 200 ] && return 0
        alive "$(pidfile_of "$role")" || { say "$role-instance exited; last log lines:"; tail -n 5 "$LOGS/$role.log"; return 1; }
        sleep 0.1
    done
    say "$role-instance not healthy after 10 s (see logs/$role.log)"
    return 1
}

cmd_start() {
    mkdir -p "$LOGS" "$RUN"
    [ -f "$ENV_FILE" ] || say "note: no $ENV_FILE; using defaults (copy deploy/env.multi.example to .env.multi)"
    ensure_built
    REDIS_URL_EFF=$(setting REDIS_URL)
    DATABASE_URL_EFF=$(setting DATABASE_URL)
    if [ -z "$REDIS_URL_EFF" ]; then
        start_local_redis
        REDIS_URL_EFF=redis://127.0.0.1:$LOCAL_REDIS_PORT/0
        say "redis: local, data in data/redis (AOF on), port $LOCAL_REDIS_PORT"
    fi
    if [ -z "$DATABASE_URL_EFF" ]; then
        start_local_pg
        DATABASE_URL_EFF=postgresql://discordbot@127.0.0.1:$LOCAL_PG_PORT/discordbot
        say "postgresql: local, data in data/pg, port $LOCAL_PG_PORT"
    fi
    if [ "${1:-}" = --sandbox ] || { [ -z "$(setting DISCORD_TOKEN)" ] && [ -z "$(setting DISCORD_TOKEN_FILE)" ]; }; then
        start_sandbox
    fi
    for r in "${ROLES[@]}"; do start_instance "$r"; done
    local ok=0
    for r in "${ROLES[@]}"; do wait_healthy "$r" || ok=1; done
    cmd_status
    return $ok
}

cmd_stop() {
    local pids=() r
    for r in "${ROLES[@]}"; do
        if alive "$(pidfile_of "$r")"; then
            kill -TERM "$(cat "$(pidfile_of "$r")")"
            pids+=("$r")
        fi
    done
    # instances drain (DRAIN_TIMEOUT_SEC, default 30) before they exit
    local drain
    drain=$(setting DRAIN_TIMEOUT_SEC)
    drain=${drain:-30}
    for r in "${pids[@]}"; do
        local pid
        pid=$(cat "$(pidfile_of "$r")")
        for _ in $(seq $(((drain + 5) * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            say "$r-instance still running after the drain timeout: killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$(pidfile_of "$r")"
        say "$r-instance stopped"
    done
    stop_local_redis
    stop_local_pg
    stop_sandbox
}

health_json() { curl -s --max-time 2 "http://127.0.0.1:$1/health" || true; }

# name status uptime processed failed, from one /health body
health_fields() {
    python3 -c 'import json,sys
try: d=json.loads(sys.stdin.read())
except Exception: d={}
print(*[d.get(k, "-") for k in ("instance", "status", "uptime_s", "processed", "failed")])'
}

cmd_status() {
    printf '%-16s %-6s %-8s %-6s %-10s %-8s %-9s %s\n' INSTANCE ROLE PID PORT HEALTH UPTIME_S PROCESSED FAILED
    for r in "${ROLES[@]}"; do
        local pid=- port name status up proc failed
        port=$(port_of "$r")
        alive "$(pidfile_of "$r")" && pid=$(cat "$(pidfile_of "$r")")
        read -r name status up proc failed < <(health_json "$port" | health_fields)
        [ "$name" = - ] && name="$r-instance" && status=down
        printf '%-16s %-6s %-8s %-6s %-10s %-8s %-9s %s\n' "$name" "$r" "$pid" "$port" "$status" "$up" "$proc" "$failed"
    done
}

cmd_health() {
    local bad=0
    for r in "${ROLES[@]}"; do
        local port code
        port=$(port_of "$r")
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/health" || true)
        if [ "$code" = 200 ]; then
            say "$r ($port): healthy"
        else
            say "$r ($port): UNHEALTHY (http ${code:-none})"
            bad=1
        fi
    done
    return $bad
}

cmd_logs() {
    local which=${1:-}
    local roles=("${ROLES[@]}")
    [ -n "$which" ] && roles=("${which%-instance}")
    local files=()
    for r in "${roles[@]}"; do files+=("$LOGS/$r.log"); done
    # tail -F of several files, each line prefixed with its instance
    for r in "${roles[@]}"; do
        tail -n 20 -F "$LOGS/$r.log" 2>/dev/null | sed -u "s/^/[$r] /" &
    done
    trap 'kill $(jobs -p) 2>/dev/null' EXIT INT TERM
    wait
}

usage() {
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
}

case ${1:-} in
start) shift; cmd_start "$@" ;;
stop) cmd_stop ;;
restart) shift; cmd_stop; cmd_start "$@" ;;
status) cmd_status ;;
health) cmd_health ;;
logs) shift; cmd_logs "${1:-}" ;;
-h|--help|help|"") usage ;;
*) usage; exit 2 ;;
esac
