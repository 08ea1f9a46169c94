#!/usr/bin/env bash
# Why a thread's scheduling class protects latency only inside its own scheduling group.
#
# Measures the p99 of a light, fixed-rate probe (pgbench -S, one client, 200 selects/s, 10 s)
# idle, then next to two CPU-bound burner threads of each class: started in the probe's own
# session, and in a session of their own. With autogroup (kernel.sched_autogroup_enabled=1, the
# default) and in containers, each session/cgroup is a scheduling group: the kernel shares the
# CPU between groups by weight, and SCHED_IDLE/nice only rank threads within a group.
#
# Usage: deploy/bench/sched_groups.sh   (PostgreSQL on 127.0.0.1:5432, user postgres)
set -euo pipefail
PG=(-h 127.0.0.1 -U postgres)
DB="sched_groups_$$"
LOGDIR="$(mktemp -d)"
trap 'pkill -f "burner-$$" 2>/dev/null || true; psql "${PG[@]}" -qc "DROP DATABASE IF EXISTS $DB" postgres >/dev/null 2>&1; rm -rf "$LOGDIR"' EXIT

psql "${PG[@]}" -qc "CREATE DATABASE $DB" postgres
pgbench "${PG[@]}" -i -q -s 1 "$DB" >/dev/null 2>&1

probe() {
  rm -f "$LOGDIR"/pgbench_log.*
  (cd "$LOGDIR" && pgbench "${PG[@]}" -S -c 1 -R 200 -T 10 -n -l "$DB" >/dev/null 2>&1)
  cat "$LOGDIR"/pgbench_log.* | awk '{print $3}' | sort -n \
    | awk '{a[NR]=$1} END {printf "p50 %.2f ms, p99 %.2f ms (%d selects)\n", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000, NR}'
}

burners() {  # $1 = class command, $2 = "same" or "own" session
  local run="for i in 1 2; do $1 sh -c ': burner-$$; while :; do :; done' & done; wait"
  if [[ "$2" == own ]]; then setsid sh -c "$run" & else sh -c "$run" & fi
  sleep 1
}

echo "idle: $(probe)"
for session in same own; do
  for class in "chrt -i 0" "chrt -b 0 nice -n 19" "nice -n 0"; do
    burners "$class" "$session"
    echo "2 burners [$class], $session session: $(probe)"
    pkill -f "burner-$$" || true
    sleep 0.5
  done
done
