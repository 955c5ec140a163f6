#!/bin/sh
# Entrypoint of the discordbot image: one image, four roles.
#
#   ROLE=chat  (no command)          -> exec /usr/local/bin/chat-instance
#   command: image [--FLAG=value]    -> exec /usr/local/bin/image-instance --FLAG=value
#   command: --check-config          -> the $ROLE binary with that flag
#   command: health-port             -> print the port /health listens on (used by HEALTHCHECK)
#   command: sh (anything else)      -> run it as is (debugging)
#
# The role comes from the first argument when it names one (chat, image,
# video, admin or chat-instance ...), else from $ROLE.
set -eu

BIN_DIR=${DISCORDBOT_BIN_DIR:-/usr/local/bin}

role_number() {
    case $1 in chat) echo 1 ;; image) echo 2 ;; video) echo 3 ;; admin) echo 4 ;; *) return 1 ;; esac
}

# The instance's health port, as the binary computes it: HEALTH_PORT, else
# 8000 + INSTANCE_NUMBER, else 8000 + the role's number. The role is $ROLE,
# else the binary running as PID 1 (when the role was given as the command).
health_port() {
    if [ -n "${HEALTH_PORT:-}" ]; then echo "$HEALTH_PORT"; return; fi
    if [ -n "${INSTANCE_NUMBER:-}" ]; then echo $((8000 + INSTANCE_NUMBER)); return; fi
    r=${ROLE:-}
    if [ -z "$r" ] && [ -r /proc/1/cmdline ]; then
        r=$(tr '\0' '\n' </proc/1/cmdline | head -n 1)
        r=${r##*/}
        r=${r%-instance}
    fi
    n=$(role_number "$r") || { echo "entrypoint: cannot tell the role (set ROLE or HEALTH_PORT)" >&2; exit 1; }
    echo $((8000 + n))
}

role=${ROLE:-}
if [ $# -gt 0 ]; then
    case $1 in
        chat | image | video | admin) role=$1; shift ;;
        chat-instance | image-instance | video-instance | admin-instance) role=${1%-instance}; shift ;;
        health-port) health_port; exit 0 ;;
        -*) ;;
        *) exec "$@" ;;
    esac
fi

if ! role_number "$role" >/dev/null; then
    echo "entrypoint: set ROLE to chat, image, video or admin (or give the role as the command); got '${role}'" >&2
    exit 64
fi
exec "$BIN_DIR/$role-instance" "$@"
