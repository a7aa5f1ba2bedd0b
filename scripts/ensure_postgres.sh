#!/usr/bin/env bash
# PostgreSQL's server binaries (initdb, pg_ctl, postgres) for tests/studies/test_postgres_backend.py: Debian's
# `postgresql` package, installed quietly where /usr/lib/postgresql/*/bin/initdb is missing (`make test` runs this
# first). Installing needs root on Debian (CI runs as root); without root it only says what to run: the test is then
# skipped, or fails under CI=true. Does nothing where the binaries are already there.
set -euo pipefail

if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure_postgres: PostgreSQL's server binaries are missing and installing them needs root; the PostgreSQL" >&2
    echo "  test will be skipped (CI=true: fail). To run it: apt-get install --no-install-recommends postgresql" >&2
    exit 0
fi
echo "ensure_postgres: installing Debian's postgresql package" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || {
    echo "ensure_postgres: postgresql installed, but no /usr/lib/postgresql/*/bin/initdb" >&2
    exit 1
}
