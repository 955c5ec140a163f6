#!/usr/bin/env bash
# healthtick.sh: run podman's container healthchecks where systemd does not
# (podman schedules them with systemd timers; without systemd no check ever
# runs, a container stays "starting" and compose's service_healthy waits
# forever). Once a second it looks at the running containers that have a
# healthcheck and runs `podman healthcheck run` for each whose interval has
# passed since its last check (Docker's default 30 s when none is set).
# Started by tests/compose/engine.sh; runs until killed.
set -uo pipefail

declare -A last interval
while :; do
    now=$(date +%s)
    while read -r id; do
        [ -n "$id" ] || continue
        if [ -z "${interval[$id]:-}" ]; then
            ns=$(podman inspect --format '{{.Config.Healthcheck.Interval}}' "$id" 2>/dev/null) || continue
            case $ns in '' | *[!0-9]*) ns=0 ;; esac
            iv=$((ns / 1000000000))
            [ "$iv" -gt 0 ] || iv=30
            interval[$id]=$iv
            last[$id]=0
        fi
        if [ $((now - ${last[$id]})) -ge "${interval[$id]}" ]; then
            last[$id]=$now
            podman healthcheck run "$id" >/dev/null 2>&1 &
        fi
    done < <(podman ps -q --no-trunc --filter health=starting --filter health=healthy --filter health=unhealthy 2>/dev/null)
    wait
    sleep 1
done
