#!/bin/sh
# The whole test suite on a fresh machine: installs what the integration tests start as real
# processes (PostgreSQL's initdb/pg_ctl, redis-server) when missing, then runs `cargo test`.
# Installing needs root (Debian/Ubuntu, apt-get); without it, missing tools are reported.
# Usage: scripts/test.sh [cargo test arguments…]
set -eu

missing=""
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"

if [ -n "$missing" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing:$missing" >&2
        apt-get update
        # shellcheck disable=SC2086 # one word per package
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
    else
        echo "missing:$missing (install them, e.g. apt-get install -y$missing, as root)" >&2
        exit 1
    fi
fi

exec cargo test --locked "$@"
