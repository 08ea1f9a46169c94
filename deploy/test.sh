#!/usr/bin/env bash
# Runs every test of the project: the Rust unit and API tests (real HTTP on port 0, a real
# PostgreSQL: DATABASE_URL, else 127.0.0.1:5432, else a throwaway cluster), then the chart tests.
#   bash deploy/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== Rust: unit and API tests"
cargo test --workspace --locked

echo "== Helm chart: render, lint, Kubernetes schemas, checkov, invariants"
bash helm/tests/run.sh
