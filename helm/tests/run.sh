#!/usr/bin/env bash
# Runs the chart tests: renders helm/todo with the real Helm engine, lints it, validates every
# object against the Kubernetes 1.29.0 and 1.33.0 schemas, scans it with checkov, and asserts
# the chart's invariants. Needs python3 (3.10+) and access to PyPI on the first run.
#   bash helm/tests/run.sh            # all tests
#   bash helm/tests/run.sh -k ingress # pytest arguments pass through
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/../.venv-chart"   # ignored by helm/.gitignore
# shellcheck source=deploy/suite-lib.sh
source "$here/../../deploy/suite-lib.sh"
pinned_venv "$venv" "$here/requirements.txt"
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true
cd "$here"
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
