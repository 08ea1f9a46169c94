#!/usr/bin/env bash
# Before and after in one run: the benchmark's rows for earlier revisions and for this tree,
# one round each in turn (rev1, rev2, …, this; rev1, …), so all meet the same machine load.
#
#   deploy/bench/compare.sh BASE_REV [MORE_REVS…]
#   BENCH_ONLY='GET /api/v1/tasks/\{id\}$|POST /api/v1/tasks$' deploy/bench/compare.sh bfae9fc
#
# Each REV is checked out in a worktree under ~/.cache/todo/bench-base/ and built there
# (release) into ~/.cache/todo/bench-base/target, shared by the revisions (never this tree's
# target: see below); its binaries are kept aside in the worktree. This tree's release binaries are built by deploy/bench/run.sh as
# usual. Each round is one `deploy/bench/run.sh` with BENCH_ROUNDS=1 and BENCH_BIN_DIR set, so
# every BENCH_* setting of run.sh applies (BENCH_ONLY picks the rows). COMPARE_ROUNDS (3)
# rounds per build. Prints, per row, each build's req/s in each round and the ratio of each
# build's median to the previous build's; the raw reports stay in BENCH_OUT (default
# deploy/bench/out/compare-<timestamp>).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
[[ $# -ge 1 ]] || { echo "usage: deploy/bench/compare.sh BASE_REV [MORE_REVS…]" >&2; exit 2; }
rounds="${COMPARE_ROUNDS:-3}"
out="${BENCH_OUT:-$ROOT/deploy/bench/out/compare-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"

builds=() bin_dirs=()
base_target="$HOME/.cache/todo/bench-base/target"
for rev in "$@"; do
  sha="$(git rev-parse --verify "$rev^{commit}")"
  tree="$HOME/.cache/todo/bench-base/$sha"
  [[ -d "$tree" ]] || git worktree add --detach "$tree" "$sha" >/dev/null
  if [[ ! -x "$tree/bench-bin/task-service" ]]; then
    echo "building ${sha:0:10} (release)" >&2
    # Cargo names a workspace member's build by its path inside the workspace, so every
    # revision's task-service shares one fingerprint in a target directory, and that fingerprint
    # is fresh for any tree whose files are older than the last build. Built in this tree's
    # target, a revision made this tree's own (older) edits look built, and the "after" rounds
    # ran the revision's binary. So revisions build in a target of their own (its dependencies
    # compile once per machine), with their files touched first so that the build before,
    # of another revision, never passes for theirs.
    find "$tree" -path "$tree/.git" -prune -o -type f -exec touch {} +
    (cd "$tree" && CARGO_TARGET_DIR="$base_target" \
      cargo build --release --locked -p auth-service -p task-service >&2)
    mkdir -p "$tree/bench-bin"
    cp "$base_target/release/auth-service" "$base_target/release/task-service" "$tree/bench-bin/"
  fi
  builds+=("${sha:0:10}") bin_dirs+=("$tree/bench-bin")
done
builds+=("$(git rev-parse --short=10 HEAD)+tree") bin_dirs+=("$ROOT/target/release")

for round in $(seq 1 "$rounds"); do
  for i in "${!builds[@]}"; do
    echo "== round $round: ${builds[$i]}" >&2
    BENCH_ROUNDS=1 BENCH_BIN_DIR="${bin_dirs[$i]}" BENCH_OUT="$out/b$i-r$round" \
      bash "$ROOT/deploy/bench/run.sh" >/dev/null
  done
done

python3 - "$out" "$rounds" "${builds[@]}" <<'EOF' | tee "$out/compare.md"
import json, statistics, sys
from pathlib import Path

out, rounds, builds = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
def rps(i):
    rows = {}
    for r in range(1, rounds + 1):
        report = json.loads((out / f"b{i}-r{r}" / "report.json").read_text())
        for key, runs in report["rows"].items():
            rows.setdefault(key, []).extend(run["rps"] for run in runs)
    return rows
measured = [rps(i) for i in range(len(builds))]
fmt = lambda xs: " / ".join(f"{x:,.1f}" if x < 100 else f"{x:,.0f}" for x in xs)
head = " | ".join(f"{b} req/s, each round" for b in builds)
ratios = " | ".join(f"{b} ÷ {a} (medians)" for a, b in zip(builds, builds[1:]))
print(f"| row (c) | {head} | {ratios} |")
print("|---|" + "---|" * len(builds) + "---:|" * (len(builds) - 1))
for key in measured[0]:
    if any(key not in m for m in measured):
        continue
    name, c = key.split("|")
    medians = [statistics.median(m[key]) for m in measured]
    cells = " | ".join(fmt(m[key]) for m in measured)
    steps = " | ".join(f"{b / a:.3f}" if a else "nan" for a, b in zip(medians, medians[1:]))
    print(f"| {name} ({c}) | {cells} | {steps} |")
EOF
