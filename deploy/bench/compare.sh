#!/usr/bin/env bash
# Before and after in one run: the benchmark's rows for an earlier revision and for this tree,
# one round each in turn (base, this, base, this, …), so both meet the same machine load.
#
#   deploy/bench/compare.sh BASE_REV
#   BENCH_ONLY='GET /api/v1/tasks/\{id\}$|POST /api/v1/tasks$' deploy/bench/compare.sh bfae9fc
#
# BASE_REV is checked out in a worktree under ~/.cache/todo/bench-base/ and built there (release);
# this tree's release binaries are built by deploy/bench/run.sh as usual. Each round is one
# `deploy/bench/run.sh` with BENCH_ROUNDS=1 and BENCH_BIN_DIR set, so every BENCH_* setting of
# run.sh applies (BENCH_ONLY picks the rows). COMPARE_ROUNDS (3) rounds per build.
# Prints, per row, each round's req/s for both builds and the ratio of the medians; the raw
# reports stay in BENCH_OUT (default deploy/bench/out/compare-<timestamp>).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
base_rev="${1:?usage: deploy/bench/compare.sh BASE_REV}"
rounds="${COMPARE_ROUNDS:-3}"
out="${BENCH_OUT:-$ROOT/deploy/bench/out/compare-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"

base_sha="$(git rev-parse --verify "$base_rev^{commit}")"
base_tree="$HOME/.cache/todo/bench-base/$base_sha"
if [[ ! -d "$base_tree" ]]; then
  git worktree add --detach "$base_tree" "$base_sha" >/dev/null
fi
# Built into this tree's target directory, so that the dependencies compiled for one build serve
# the other (a target of its own would compile every crate again); the binaries are kept aside.
base_bin="$base_tree/bench-bin"
if [[ ! -x "$base_bin/task-service" ]]; then
  echo "building the base, ${base_sha:0:10} (release)" >&2
  (cd "$base_tree" && CARGO_TARGET_DIR="$ROOT/target" \
    cargo build --release --locked -p auth-service -p task-service >&2)
  mkdir -p "$base_bin"
  cp "$ROOT/target/release/auth-service" "$ROOT/target/release/task-service" "$base_bin/"
fi

for round in $(seq 1 "$rounds"); do
  for build in base this; do
    bin_dir="$ROOT/target/release"
    [[ $build == base ]] && bin_dir="$base_bin"
    echo "== round $round: $build" >&2
    BENCH_ROUNDS=1 BENCH_BIN_DIR="$bin_dir" BENCH_OUT="$out/$build-r$round" \
      bash "$ROOT/deploy/bench/run.sh" >/dev/null
  done
done

python3 - "$out" "$rounds" "${base_sha:0:10}" "$(git rev-parse --short=10 HEAD)" <<'EOF' | tee "$out/compare.md"
import json, statistics, sys
from pathlib import Path

out, rounds, base, this = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
def rps(build):
    rows = {}
    for r in range(1, rounds + 1):
        report = json.loads((out / f"{build}-r{r}" / "report.json").read_text())
        for key, runs in report["rows"].items():
            rows.setdefault(key, []).extend(run["rps"] for run in runs)
    return rows
before, after = rps("base"), rps("this")
print(f"| row (c) | {base} req/s, each round | {this} (working tree) req/s, each round | after / before (medians) |")
print("|---|---|---|---:|")
for key in before:
    if key not in after:
        continue
    name, c = key.split("|")
    b, a = before[key], after[key]
    ratio = statistics.median(a) / statistics.median(b) if statistics.median(b) else float("nan")
    fmt = lambda xs: " / ".join(f"{x:,.1f}" if x < 100 else f"{x:,.0f}" for x in xs)
    print(f"| {name} ({c}) | {fmt(b)} | {fmt(a)} | {ratio:.3f} |")
EOF
