#!/usr/bin/env bash
# README command 1: install what is missing, then run the platform (server + one local worker)
# with the built-in demo datasets at http://127.0.0.1:8080 (override with ALIGNDET_BIND).
# DATABASE_URL unset → the server runs its own Postgres cluster under the data dir.
# Ctrl-C stops everything; data (ALIGNDET_DATA, default ~/.local/share/aligndet-studio) persists.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
cargo build -q --workspace --bins

BIND="${ALIGNDET_BIND:-127.0.0.1:8080}"
DATA="${ALIGNDET_DATA:-$HOME/.local/share/aligndet-studio}"
mkdir -p "$DATA"

target/debug/aligndet-server --bind "$BIND" --data-dir "$DATA" --demo &
SERVER=$!
WORKER=""
cleanup() {
  [ -n "$WORKER" ] && kill "$WORKER" 2>/dev/null || true
  kill "$SERVER" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for _ in $(seq 1 300); do
  curl -sf "http://$BIND/healthz" >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { echo "the server exited; see the messages above" >&2; exit 1; }
  sleep 0.5
done
target/debug/trainer worker --server "http://$BIND" --token-file "$DATA/worker-token" --name local-worker &
WORKER=$!
echo
echo "AlignDet Studio is running at http://$BIND  (Ctrl-C to stop)"
if [ -f "$DATA/first-admin-password" ]; then
  echo "Sign in as admin with the one-time password in $DATA/first-admin-password (change it on the account page)."
fi
wait "$SERVER"
