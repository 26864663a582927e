#!/usr/bin/env bash
# README command 2: install what is missing, then run every test (unit, integration against a real
# Postgres and real worker processes, browser tests in headless Chromium, numeric parity scripts).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
CACHE="${ALIGNDET_CACHE:-$HOME/.cache/aligndet-studio}"

# Tests create their own databases on this Postgres (ALIGNDET_TEST_PG to use another).
export ALIGNDET_TEST_PG="${ALIGNDET_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}"
if ! psql "$ALIGNDET_TEST_PG" -tAc 'SELECT 1' >/dev/null 2>&1; then
  echo "[test] starting the system Postgres cluster" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
  for _ in $(seq 1 30); do psql "$ALIGNDET_TEST_PG" -tAc 'SELECT 1' >/dev/null 2>&1 && break; sleep 1; done
  psql "$ALIGNDET_TEST_PG" -tAc 'SELECT 1' >/dev/null || { echo "no Postgres at $ALIGNDET_TEST_PG" >&2; exit 1; }
fi

echo "[test] format and lints" >&2
cargo fmt --all -- --check
cargo clippy -q --workspace --all-targets -- -D warnings

echo "[test] building" >&2
cargo build -q --workspace --bins --tests

echo "[test] cargo test" >&2
cargo test -q --workspace --no-fail-fast -- --test-threads=2

for script in scripts/eval_parity.py scripts/segm_parity.py; do
  if [ -f "$script" ]; then
    echo "[test] $script" >&2
    "$CACHE/venv/bin/python" "$script" --trainer target/debug/trainer
  fi
done
echo "[test] scripts/match_parity.py" >&2
"$CACHE/venv/bin/python" scripts/match_parity.py --server target/debug/aligndet-server
