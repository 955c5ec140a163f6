#!/bin/sh
# The official valkey image's rule: a server started without a config file
# gets --protected-mode no (else it refuses clients from other containers).
set -eu
case ${1:-} in
valkey-server | redis-server)
    case ${2:-} in
    *.conf) ;;
    *) set -- "$@" --protected-mode no ;;
    esac
    ;;
esac
exec "$@"
