#!/usr/bin/env python3
"""Memory per idle connection of each echo server: RSS growth over N idle TCP connections.

For each server (the ones bench/compare.py knows, found and built the same way):
  1. start it on 127.0.0.1 with `--port 0` and read the `listening on` line;
  2. let it settle (RSS and CPU time unchanged for a moment) and read its RSS (VmRSS of
     /proc/PID/status, all threads) — the baseline;
  3. open N TCP connections from this script, in batches, never more than a few hundred ahead of
     what the server has accepted, and send nothing;
  4. wait until the server holds all N (its open descriptors in /proc/PID/fd grew by N), then
     until its RSS and CPU time stop changing (bounded), and read RSS again;
  5. only then check that the connections are served: echo one byte on a sample of them.
Reported: (RSS after - RSS before) / N in bytes per connection, and the marginal figure between
the first tenth of the connections and all of them (which leaves out one-time costs such as
thread stacks or pools that the first connections bring). Memory the kernel holds for the
sockets (socket buffers, TCP state) is not in a process's RSS and is not counted.

Standard library only. The script raises its own RLIMIT_NOFILE (and so the servers') up to the
hard limit: N connections need N descriptors here and N in the server.
"""

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # importing compare.py leaves no __pycache__ in bench/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the servers, the build, starting a server)

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def settle(pid, quiet=0.6, limit=15.0):
    """Waits (at most `limit` s) until RSS and CPU time have not changed for `quiet` s; returns
    (rss, settled)."""
    deadline = time.monotonic() + limit
    last = (rss_bytes(pid), compare.cpu_seconds(pid))
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = (rss_bytes(pid), compare.cpu_seconds(pid))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now[0], True
    return last[0], False


def wait_fds(pid, target, limit):
    """Waits (at most `limit` s) until the server has at least `target` descriptors."""
    deadline = time.monotonic() + limit
    n = fd_count(pid)
    while n < target and time.monotonic() < deadline:
        time.sleep(0.02)
        n = fd_count(pid)
    return n


def open_connections(addr, count, pid, fds0, conns, ahead=400, batch=100, timeout=60.0):
    """Connects until `conns` holds `count` sockets, keeping at most `ahead` connections beyond
    what the server has accepted (its listen backlog is finite)."""
    host, port = addr.rsplit(":", 1)
    target = (host, int(port))
    while len(conns) < count:
        for _ in range(min(batch, count - len(conns))):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(10.0)
            s.connect(target)
            conns.append(s)
        if wait_fds(pid, fds0 + len(conns) - ahead, timeout) < fds0 + len(conns) - ahead:
            raise RuntimeError(f"server stopped accepting at about {fd_count(pid) - fds0} "
                               f"connections")


def echo_sample(conns, sample, timeout=10.0):
    """Echoes one byte on `sample` connections spread over all of them; returns how many came
    back right."""
    if not conns:
        return 0
    step = max(1, len(conns) // sample)
    picked = conns[::step][:sample]
    ok = 0
    for i, s in enumerate(picked):
        b = bytes([65 + i % 26])
        s.settimeout(timeout)
        try:
            s.sendall(b)
            if s.recv(16) == b:
                ok += 1
        except OSError:
            pass
    return ok


def drain(pipe):
    for _ in pipe:
        pass


def measure(name, cmd, count, sample):
    proc, addr = compare.start_server(cmd, cpu=None)
    threading.Thread(target=drain, args=(proc.stdout,), daemon=True).start()
    conns = []
    try:
        pid = proc.pid
        before, settled0 = settle(pid)
        fds0 = fd_count(pid)
        first = max(1, count // 10)
        open_connections(addr, first, pid, fds0, conns)
        got = wait_fds(pid, fds0 + first, 60.0)
        mid, settled1 = settle(pid)
        open_connections(addr, count, pid, fds0, conns)
        got = wait_fds(pid, fds0 + count, 60.0)
        after, settled2 = settle(pid)
        held = got - fds0
        echoed = echo_sample(conns, sample)
        return {
            "server": name,
            "connections": count,
            "held": held,
            "rss_before": before,
            "rss_first_tenth": mid,
            "rss_after": after,
            "bytes_per_conn": (after - before) / count,
            "marginal_bytes_per_conn": (after - mid) / (count - first) if count > first else None,
            "settled": settled0 and settled1 and settled2,
            "echoed": f"{echoed}/{min(sample, count)}",
        }
    finally:
        for s in conns:
            s.close()
        proc.kill()
        proc.wait()


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, need)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < need:
        sys.exit(f"RLIMIT_NOFILE is {soft} (hard {hard}); {need} descriptors are needed")
    return soft


def kib(v):
    return "n/a" if v is None else f"{v / 1024:,.2f}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--connections", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=3, help="runs per server (median reported)")
    p.add_argument("--sample", type=int, default=100, help="connections echoed after measuring")
    p.add_argument("--servers", help="comma-separated subset (names as in compare.py)")
    p.add_argument("--no-build", action="store_true", help="use the binaries as they are")
    p.add_argument("--json", help="write every run to this file")
    args = p.parse_args()

    limit = raise_nofile(args.connections + 100)
    if not args.no_build:
        compare.build()
    commands = compare.servers(os.path.join(compare.target_dir(), "release"))
    names = compare.select(commands, args.servers)
    print(f"servers: {', '.join(names)}; {args.connections} connections; "
          f"RLIMIT_NOFILE {limit}", file=sys.stderr)

    runs = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names:
            try:
                m = measure(name, commands[name], args.connections, args.sample)
            except (RuntimeError, OSError) as e:
                print(f"  round {r + 1} {name}: {e}", file=sys.stderr)
                continue
            runs[name].append(m)
            print(f"  round {r + 1}/{args.rounds} {name:24} RSS {kib(m['rss_before'])} -> "
                  f"{kib(m['rss_after'])} KiB, {m['bytes_per_conn']:,.0f} B/conn (marginal "
                  f"{m['marginal_bytes_per_conn']:,.0f}), held {m['held']}, echoed "
                  f"{m['echoed']}{'' if m['settled'] else ', not settled'}", file=sys.stderr)

    print(f"\n{args.connections:,} idle connections; medians of {args.rounds} rounds\n")
    print("| server | RSS before KiB | RSS after KiB | bytes / connection | marginal bytes / "
          "connection | held | echoed after |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        ms = runs[name]
        if not ms:
            print(f"| {name} | failed | | | | | |")
            continue
        med = {k: statistics.median(m[k] for m in ms)
               for k in ("rss_before", "rss_after", "bytes_per_conn", "marginal_bytes_per_conn")}
        held = min(m["held"] for m in ms)
        echoed = ", ".join(m["echoed"] for m in ms)
        print(f"| {name} | {kib(med['rss_before'])} | {kib(med['rss_after'])} "
              f"| {med['bytes_per_conn']:,.0f} | {med['marginal_bytes_per_conn']:,.0f} "
              f"| {held:,} | {echoed} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "servers": {n: compare.describe(commands[n])
                                                           for n in names}, "runs": runs},
                      f, indent=1)


if __name__ == "__main__":
    main()
