#!/usr/bin/env bash
# Counts the user-mode instructions a server executes per echoed message, under callgrind.
#
#   bench/instructions.sh [SERVER COMMAND...]
#   bench/instructions.sh target/release/overlapped echo-server --model port --threads 1
#   bench/instructions.sh target/release/echo-epoll
#
# CPU time per message moves by tens of percent between runs on a shared machine; the number of
# instructions a server executes per message does not, so it shows what a change to our own code
# did to our own code (not to the kernel's share, nor to what a cache miss costs). The server runs
# under `valgrind --tool=callgrind` and `overlapped bench` drives it with paced load twice, for a
# short and a long time; the difference of the two runs' instruction counts divided by the
# difference of their messages leaves out what does not grow with messages (start-up, accepts).
# The server must take `--port 0` and print the address it listens on as the last word of its
# first line, as ours and the peers in bench/ do.
#
# Environment:
#   VALGRIND      the valgrind to run (default: valgrind); io_uring servers with more than one
#                 thread need one that does not hang in io_uring_enter (BENCHMARKS.md, "Valgrind")
#   BENCH         the `overlapped` binary that drives the load (default: target/release/overlapped)
#   CONNECTIONS   connections (default: 50)
#   RATE          messages per second over all connections (default: 1000)
#   SHORT, LONG   seconds of the two runs (default: 2 and 5)
#   ATOMICS       1: also count the atomic read-modify-writes (bus-locking instructions) the
#                 server's executable ran per message, and the twelve functions that ran the
#                 most of them (bench/atomics.py; the runs record each instruction)
#
# Prints: instructions per message, and each run's instructions and messages; with ATOMICS=1,
# atomic read-modify-writes per message likewise, then the functions.

set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/server_address.sh
. "$ROOT/bench/server_address.sh"
VALGRIND=${VALGRIND:-valgrind}
BENCH=${BENCH:-$ROOT/target/release/overlapped}
CONNECTIONS=${CONNECTIONS:-50}
RATE=${RATE:-1000}
SHORT=${SHORT:-2}
LONG=${LONG:-5}
ATOMICS=${ATOMICS:-0}
[ $# -gt 0 ] || { sed -n '2,6p' "$0"; exit 2; }

WORK=$(mktemp -d -t instructions.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# One run: the server under callgrind for `secs` seconds of load; prints "instructions messages",
# and with ATOMICS=1 "atomics" after them.
run() {
    local secs=$1 out="$WORK/run-$1" dump=()
    [ "$ATOMICS" = 1 ] && dump=(--dump-instr=yes)
    "$VALGRIND" --tool=callgrind "${dump[@]}" --callgrind-out-file="$out.cg" "${@:2}" --port 0 \
        >"$out.server" 2>"$out.valgrind" &
    local server=$! addr
    addr=$(await_address "$out.server" "$server" "$out.valgrind") || exit 1
    "$BENCH" bench --addr "$addr" --connections "$CONNECTIONS" --rate "$RATE" \
        --duration "$secs" --warmup 0 --threads 1 --json >"$out.json"
    kill -TERM "$server" 2>/dev/null
    for _ in $(seq 100); do
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$server" 2>/dev/null; then
        kill -KILL "$server" 2>/dev/null
        echo "the server did not exit under valgrind (one that hangs in io_uring_enter?)" >&2
        exit 1
    fi
    wait "$server" 2>/dev/null
    local ir messages
    ir=$(grep -h '^summary:' "$out.cg"* | awk '{s += $2} END {print s}')
    messages=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["messages"])' \
        "$out.json")
    if [ "$ATOMICS" = 1 ]; then
        python3 "$ROOT/bench/atomics.py" "$2" "$out.cg"* --by-function 60 >"$out.atomics" \
            || exit 1
        echo "$ir $messages $(head -n1 "$out.atomics")"
    else
        echo "$ir $messages"
    fi
}

run "$SHORT" "$@" >"$WORK/short" || exit 1
run "$LONG" "$@" >"$WORK/long" || exit 1
read -r short_ir short_msgs short_atomics <"$WORK/short"
read -r long_ir long_msgs long_atomics <"$WORK/long"
python3 - "$short_ir" "$short_msgs" "$long_ir" "$long_msgs" <<'EOF' || exit 1
import sys
si, sm, li, lm = map(int, sys.argv[1:])
if lm <= sm:
    sys.exit(f"the long run echoed no more messages ({lm}) than the short one ({sm})")
print(f"{(li - si) / (lm - sm):,.0f} instructions per message "
      f"(runs: {si:,} for {sm:,} messages, {li:,} for {lm:,})")
EOF
if [ "$ATOMICS" = 1 ]; then
    python3 - "$short_atomics" "$short_msgs" "$long_atomics" "$long_msgs" \
        "$WORK/run-$SHORT.atomics" "$WORK/run-$LONG.atomics" <<'EOF'
import sys
sa, sm, la, lm = map(int, sys.argv[1:5])
print(f"{(la - sa) / (lm - sm):,.1f} atomic read-modify-writes per message "
      f"(runs: {sa:,} for {sm:,} messages, {la:,} for {lm:,})")


def functions(path):
    rows = {}
    for line in open(path).read().splitlines()[1:]:
        count, name = line.split(" ", 1)
        rows[name] = int(count)
    return rows


short, long = functions(sys.argv[5]), functions(sys.argv[6])
grown = {name: (executed - short.get(name, 0)) / (lm - sm) for name, executed in long.items()}
for name, per_message in sorted(grown.items(), key=lambda kv: -kv[1])[:12]:
    print(f"  {per_message:6.1f}  {name}")
EOF
fi
