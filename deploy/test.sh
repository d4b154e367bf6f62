#!/usr/bin/env bash
# One command for the test suite on a fresh Debian machine: system packages, PostgreSQL,
# the virtual environment, then every test — database tests on SQLite and on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
# PostgreSQL for the database tests; Chromium for the browser tests (driven by Playwright
# with executable_path=/usr/bin/chromium — Playwright's own browser download can't work here).
if [ "$(id -u)" = 0 ] && { ! command -v pg_ctlcluster >/dev/null || [ ! -x /usr/bin/chromium ]; }; then
  apt-get update -q
  apt-get install -y -q postgresql chromium
fi
bash deploy/install.sh

# A local PostgreSQL for the database tests (loopback only).
if command -v pg_ctlcluster >/dev/null; then
  PGVER=$(ls /etc/postgresql | sort -n | tail -1)
  pg_ctlcluster "$PGVER" main start 2>/dev/null || true
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -q && break; sleep 1; done
  su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
  export POLICYHUB_TEST_POSTGRES_URL=${POLICYHUB_TEST_POSTGRES_URL:-postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres}
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p test-output
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
