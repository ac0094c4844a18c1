#!/usr/bin/env bash
# Runs the library's test suite under valgrind memcheck, once per backend.
#
#   bench/valgrind.sh [FILTER]          # FILTER: a libtest name filter, e.g. s15
#
# Each test binary of `cargo test -p overlapped` runs as
#   OVERLAPPED_BACKEND=<backend> valgrind --error-exitcode=1 --leak-check=full \
#       --errors-for-leak-kinds=definite --trace-children=yes <binary> --test-threads=1
# for <backend> in uring and epoll. With the backend forced, the SPEC tests run their body in
# this process only (they start no child for the other backend). Tests that do start children
# (tests that change per-process state, the book programs, the seccomp fallback test) are
# followed by valgrind (--trace-children) and every process writes its own log, so each process
# is checked once and counted once: the summary counts errors per process log, by the process's
# own command line, and a child's errors are not added to its parent's.
#
# Environment:
#   VALGRIND            the valgrind to run (default: valgrind). Valgrind up to at least 3.19
#                       lets a thread that blocks in io_uring_enter keep valgrind's global lock,
#                       so a program whose reaper thread waits in the kernel hangs for good
#                       under it; the io_uring backend then needs a valgrind whose io_uring_enter
#                       wrapper is marked as blocking (see BENCHMARKS.md, "Valgrind"). The script
#                       probes for the hang and skips the io_uring backend if it sees it.
#   BACKENDS            backends to run (default: "uring epoll")
#   TEST_TIMEOUT        seconds allowed to one test binary under valgrind (default: 900)
#   SKIP                tests not run under valgrind (default: the three below; "" runs all)
#   OUT                 where logs go (default: a new temporary directory)
#   CARGO_TARGET_DIR    as for cargo
#
# Exit status: 0 if no process had a memcheck error or a definite leak and every binary passed.

set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VALGRIND=${VALGRIND:-valgrind}
BACKENDS=${BACKENDS:-"uring epoll"}
TEST_TIMEOUT=${TEST_TIMEOUT:-900}
OUT=${OUT:-$(mktemp -d -t overlapped-valgrind.XXXXXX)}
FILTER=${1:-}
SUPP="$ROOT/bench/valgrind.supp"
# Tests that cannot pass under valgrind, for reasons of the tool, not of the library:
# - full_descriptor_table_gives_wsaemfile lowers RLIMIT_NOFILE; valgrind keeps descriptors of
#   its own, virtualises that limit, and refuses (EPERM) any setrlimit whose hard limit is not
#   its own.
# - s08_send_of_64_mib_to_slow_reader_completes_whole: its reader gives up after 20 s without
#   data, and building the 64 MiB of test pattern before the send takes longer than that under
#   valgrind, so the send meets a closed socket (EPIPE).
# - looking_at_the_queue_while_others_push_neither_loses_nor_repeats_entries: a race test of four
#   threads that spin on the ring (two push, two look); valgrind runs one thread at a time, and
#   with io_uring_enter marked as blocking the run takes more than the binary's timeout. It
#   checks the submission queue's bookkeeping, which memcheck has nothing to add to.
SKIP=${SKIP-"full_descriptor_table_gives_wsaemfile s08_send_of_64_mib_to_slow_reader_completes_whole looking_at_the_queue_while_others_push_neither_loses_nor_repeats_entries"}
SKIP_ARGS=()
for t in $SKIP; do SKIP_ARGS+=(--skip "$t"); done

mkdir -p "$OUT"
echo "logs: $OUT"

# The test binaries, as cargo names them.
mapfile -t BINARIES < <(
    cd "$ROOT" && cargo test -p overlapped --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])
')
if [ "${#BINARIES[@]}" -eq 0 ]; then
    echo "no test binaries (does 'cargo test -p overlapped --no-run' build?)" >&2
    exit 2
fi
# The examples that the book-program tests start are built by cargo alongside the tests.

VG_ARGS=(--error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite
         --trace-children=yes --child-silent-after-fork=yes --num-callers=30)
[ -f "$SUPP" ] && VG_ARGS+=("--suppressions=$SUPP")

# Does this valgrind hang when a thread blocks in io_uring_enter? Runs the smallest test that
# waits for a completion on the reaper thread, with a short bound.
uring_usable() {
    local probe
    probe=$(printf '%s\n' "${BINARIES[@]}" | grep '/spec_results-' | head -n1)
    [ -n "$probe" ] || return 0
    OVERLAPPED_BACKEND=uring timeout -k 5 30 "$VALGRIND" -q --log-file=/dev/null \
        "$probe" --test-threads=1 s17 >/dev/null 2>&1
}

status=0
for backend in $BACKENDS; do
    if [ "$backend" = uring ] && ! uring_usable; then
        echo "SKIP uring: $VALGRIND hangs (or fails) when a thread waits in io_uring_enter" | tee "$OUT/uring-skipped"
        status=1
        continue
    fi
    for bin in "${BINARIES[@]}"; do
        name=$(basename "$bin" | sed 's/-[0-9a-f]*$//')
        dir="$OUT/$backend/$name"
        mkdir -p "$dir"
        start=$(date +%s)
        OVERLAPPED_BACKEND=$backend timeout -k 10 "$TEST_TIMEOUT" \
            "$VALGRIND" "${VG_ARGS[@]}" --log-file="$dir/%p.log" \
            "$bin" --test-threads=1 "${SKIP_ARGS[@]}" ${FILTER:+"$FILTER"} \
            >"$dir/stdout" 2>"$dir/stderr"
        rc=$?
        secs=$(( $(date +%s) - start ))
        result=$(grep -h '^test result:' "$dir/stdout" | tail -n1)
        [ "$rc" -eq 124 ] && result="TIMED OUT after ${TEST_TIMEOUT}s"
        printf '%-6s %-20s rc=%-3s %4ss  %s\n' "$backend" "$name" "$rc" "$secs" "$result"
        [ "$rc" -eq 0 ] || status=1
    done
done

# One line per process that had errors or definite leaks, from its own log. A process killed
# with SIGKILL (the example servers that the book-program tests stop) writes no summary: its log
# is still searched for error reports, which valgrind writes as they happen, but its leaks are
# not checked.
python3 - "$OUT" <<'EOF' || status=1
import os, re, sys
out = sys.argv[1]
ERROR = re.compile(r"^==\d+== (Invalid |Conditional jump|Use of uninitialised|Syscall param|"
                   r"Mismatched free|Source and destination overlap|Argument .* of function|"
                   r"Jump to |Process terminating)", re.M)
bad = processes = killed = 0
for dirpath, _, files in sorted(os.walk(out)):
    for f in sorted(files):
        if not f.endswith(".log"):
            continue
        processes += 1
        path = os.path.join(dirpath, f)
        text = open(path, errors="replace").read()
        cmd = re.search(r"Command: (.*)", text)
        cmd = os.path.basename(cmd.group(1)) if cmd else "?"
        summary = re.search(r"ERROR SUMMARY: (\d+) errors", text)
        definite = re.search(r"definitely lost: ([\d,]+) bytes", text)
        n_def = int(definite.group(1).replace(",", "")) if definite else 0
        reports = len(ERROR.findall(text))
        if summary is None:
            killed += 1
        if (summary and int(summary.group(1))) or n_def or reports:
            bad += 1
            errs = summary.group(1) if summary else f"{reports} reported (killed, no summary)"
            print(f"{os.path.relpath(path, out)}: {errs} errors, {n_def} bytes definitely lost: {cmd}")
print(f"{processes} processes checked ({killed} killed without a summary: leaks not checked); "
      f"{bad} with memcheck errors or definite leaks")
sys.exit(1 if bad else 0)
EOF
exit $status
