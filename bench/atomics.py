#!/usr/bin/env python3
"""Counts the atomic read-modify-write instructions a program executed in its own executable.

    bench/atomics.py BINARY CALLGRIND_OUT... [--by-function N]

Reads callgrind output files written with `--dump-instr=yes` (`bench/instructions.sh` writes
them with ATOMICS=1) and prints how many times instructions of BINARY that lock the memory bus
ran: those with a `lock` prefix and `xchg` with a memory operand (locked without the prefix).
Every uncontended `Mutex` lock and unlock, `Arc` clone and drop and atomic swap is one of them;
each costs a few nanoseconds and orders the memory accesses around it, so a count per message
tells where a server pays for synchronisation, beside its instruction count. Instructions of
shared libraries (the C library's allocator, say) are not counted. With `--by-function N`, the
N functions that ran the most of them follow, one per line.

Standard library and `objdump` only.
"""

import collections
import os
import re
import subprocess
import sys

POSITION = re.compile(r"^(0x[0-9a-f]+|\+\d+|-\d+|\*)(?:\s+(.*))?$")
NAMED = re.compile(r"^(c?ob|c?fn)=\((\d+)\)(?: (.*))?$")


def atomic_addresses(binary):
    """The addresses of `binary`'s instructions that lock the bus, from its disassembly."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", binary], check=True,
                         capture_output=True, text=True).stdout
    found = set()
    for line in out.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(\S+)(.*)", line)
        if m and (m.group(2) == "lock" or (m.group(2).startswith("xchg") and "(" in m.group(3))):
            found.add(int(m.group(1), 16))
    return found


def count(binary, files):
    """Executions of `binary`'s bus-locking instructions in callgrind files, in total and per
    function."""
    atomic = atomic_addresses(binary)
    name = os.path.realpath(binary)
    total, by_function = 0, collections.Counter()
    for path in files:
        names = {"ob": {}, "fn": {}}
        obj = function = None
        address = 0
        after_calls = False
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n")
                named = NAMED.match(line)
                if named:
                    kind, ident, text = named.groups()
                    table = names["ob"] if kind.endswith("ob") else names["fn"]
                    if text is not None:
                        table[ident] = text
                    if kind == "ob":
                        obj = table.get(ident)
                    elif kind == "fn":
                        function = table.get(ident)
                    continue
                if line.startswith("calls="):
                    after_calls = True  # the next position line is a call's inclusive cost
                    continue
                position = POSITION.match(line)
                if not position:
                    continue
                step = position.group(1)
                if step.startswith("0x"):
                    address = int(step, 16)
                elif step[0] in "+-":
                    address += int(step)
                if after_calls:
                    after_calls = False
                    continue
                if obj is None or os.path.realpath(obj) != name or address not in atomic:
                    continue
                executed = int((position.group(2) or "0").split()[-1])
                total += executed
                by_function[function] += executed
    return total, by_function


def main():
    args = sys.argv[1:]
    top = 0
    if "--by-function" in args:
        i = args.index("--by-function")
        top = int(args[i + 1])
        del args[i:i + 2]
    if len(args) < 2:
        sys.exit(__doc__.split("\n\n")[1])
    total, by_function = count(args[0], args[1:])
    print(total)
    for function, executed in by_function.most_common(top):
        print(f"{executed} {function}")


if __name__ == "__main__":
    main()
