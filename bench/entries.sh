#!/usr/bin/env bash
# Counts a server's entries into io_uring by what each one asked for, under load.
#
#   bench/entries.sh paced|unpaced SERVER COMMAND...
#   bench/entries.sh paced target/release/overlapped echo-server --model port --threads 1
#
# System calls per message (compare.py) say how often a server enters the kernel, not why. Every
# `io_uring_enter` says it in its arguments: whether it hands the kernel new requests
# (`to_submit` > 0) and how many completions it waits for (`min_complete`). This script records
# the `syscalls:sys_enter_io_uring_enter` tracepoint of the server (perf) for a few seconds of
# load, pinned as compare.py pins (server on CPU 0, load on CPU 1), and prints how many entries of
# each kind it made per message. The load is compare.py's: paced, 100 connections at depth 1 and
# 50,000 msgs/s; unpaced, 1,000 connections at depth 4.
#
# Environment:
#   BENCH     the `overlapped` binary that drives the load (default: target/release/overlapped)
#   SECONDS_RECORDED   seconds of load recorded (default: 3), after 2.5 s of warm-up
#
# Needs perf with tracepoint access (as compare.py's system-call counting does). The server must
# take `--port 0` and print the address it listens on as the last word of its first line.

set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/server_address.sh
. "$ROOT/bench/server_address.sh"
BENCH=${BENCH:-$ROOT/target/release/overlapped}
RECORDED=${SECONDS_RECORDED:-3}
[ $# -ge 2 ] || { sed -n '2,5p' "$0"; exit 2; }
MODE=$1
shift
case "$MODE" in
    paced) LOAD=(--connections 100 --depth 1 --rate 50000) ;;
    unpaced) LOAD=(--connections 1000 --depth 4) ;;
    *) echo "the mode is paced or unpaced, not $MODE" >&2; exit 2 ;;
esac

WORK=$(mktemp -d -t entries.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

taskset -c 0 "$@" --port 0 >"$WORK/server" 2>&1 &
server=$!
addr=$(await_address "$WORK/server" "$server") || exit 1
duration=$(python3 -c "print(int($RECORDED + 4))")
taskset -c 1 "$BENCH" bench --addr "$addr" "${LOAD[@]}" --duration "$duration" --warmup 0 \
    --json >"$WORK/bench.json" 2>/dev/null &
load=$!
sleep 2.5
perf record -q -e syscalls:sys_enter_io_uring_enter -p "$server" -o "$WORK/perf.data" \
    -- sleep "$RECORDED" >/dev/null 2>&1
wait "$load"
kill "$server" 2>/dev/null
wait "$server" 2>/dev/null
perf script -i "$WORK/perf.data" >"$WORK/entries" 2>/dev/null
python3 - "$WORK/bench.json" "$RECORDED" "$WORK/entries" <<'EOF'
import collections
import json
import re
import sys

run = json.load(open(sys.argv[1]))
messages = run["msgs_per_s"] * float(sys.argv[2])
kinds = collections.Counter()
for line in open(sys.argv[3]):
    m = re.search(r"to_submit: (0x[0-9a-f]+), min_complete: (0x[0-9a-f]+)", line)
    if m:
        kinds[(int(m.group(1), 16) > 0, int(m.group(2), 16))] += 1
total = sum(kinds.values())
if total == 0:
    sys.exit("no io_uring_enter recorded (no io_uring server, or no tracepoint access)")
print(f"{total / messages:.3f} entries per message ({total:,} for about {messages:,.0f} messages)")
for (submits, waits_for), count in kinds.most_common():
    what = "submits" if submits else "no submission"
    print(f"  {count / messages:.3f}  {what}, waits for {waits_for} ({count / total:.0%})")
EOF
