#!/usr/bin/env bash
# Runs scenarios/soak.toml for MINUTES (default 30) under our policy while reading the API
# every 2 s, and reports the daemon's RSS over time, the actions and events it logged, and the
# VMs lost. Not part of the test command (too long); needs ./scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-30}
bin=target/x86_64-unknown-linux-gnu/release/memvisor
[ -x "$bin" ] || ./scripts/setup.sh
dir=$(mktemp -d /var/tmp/memvisor-soak-XXXX)
trap '"$bin" --dir "$dir" down >/dev/null 2>&1 || true' EXIT
"$bin" --dir "$dir" up -f scenarios/soak.toml >/dev/null
pid=$(pgrep -f -- "--dir $dir .*daemon" | head -1)
echo "soak: $minutes min, daemon pid $pid, state in $dir"
echo "MINUTE  DAEMON_RSS_KIB  EVENTS  VMS_RUNNING"
end=$(( $(date +%s) + minutes * 60 ))
next_report=$(date +%s)
requests=0
while [ "$(date +%s)" -lt "$end" ]; do
  "$bin" --dir "$dir" ps --json >/dev/null && requests=$((requests + 1))
  "$bin" --dir "$dir" metrics >/dev/null && requests=$((requests + 1))
  if [ "$(date +%s)" -ge "$next_report" ]; then
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    events=$("$bin" --dir "$dir" metrics | awk '/^memvisor_events_total/ {s += $2} END {print s}')
    running=$("$bin" --dir "$dir" ps --json | grep -c '"state": "running"' || true)
    printf "%6d  %14s  %6s  %11s\n" $(( (next_report - end + minutes * 60) / 60 )) "$rss" "$events" "$running"
    next_report=$((next_report + 60))
  fi
  sleep 2
done
echo "soak: $requests API requests answered"
echo "soak: events by kind:"
"$bin" --dir "$dir" metrics | grep '^memvisor_events_total'
echo "soak: actions by kind:"
"$bin" --dir "$dir" events --json | grep -o '"action":{"kind":"[a-z_]*"' | sort | uniq -c
lost=$("$bin" --dir "$dir" ps --json | grep -c '"state": "lost"' || true)
oom=$("$bin" --dir "$dir" metrics | awk '/^memvisor_vm_guest_oom_kills_total/ {s += $2} END {print s+0}')
echo "soak: VMs lost: $lost; guest OOM kills: $oom"
[ "$lost" -eq 0 ]
