#!/usr/bin/env python3
"""Compare echo servers side by side: ours (overlapped echo-server) and the peers in bench/.

Servers run one after another in alternating rounds (A B C ... A B C ...), so that a slow minute
of a shared machine hurts every server of that round alike. Each run starts a fresh server pinned
to CPU 0 and `overlapped bench` pinned to CPU 1. Over the measured window the script samples the
server's CPU time (utime + stime of /proc/PID/stat, all threads; utime alone is reported too,
as user CPU per message: what the server's own code costs beside the kernel's work) and, if
`perf` can count the `raw_syscalls:sys_enter` tracepoint, the server's system calls. It
reports, per server, the median over rounds of each metric and the median of the within-round
ratio to the reference server (the hand-written epoll server). Two modes:

  paced    100 connections, depth 1, a fixed offered rate below every server's capacity:
           CPU microseconds per message, p99 latency, system calls per message.
  unpaced  1,000 connections, depth 4, as fast as the server goes: msgs/s, system calls per
           message, CPU per message.

Our servers run on each backend: `overlapped-MODEL` on the one the library picks (io_uring where
the kernel allows it), `overlapped-MODEL-epoll` with `OVERLAPPED_BACKEND=epoll`.

`--variant 'NAME=SERVER ITEM...'` adds a server: SERVER's command with the items added (leading
`VAR=value` items to its environment, the rest to its arguments), so that a setting not in the
list is measured by command.

Standard library only. `--svg FILE` draws the paced CPU per message of each server. `--versus
SERVER` also divides each server's CPU per message by SERVER's in the same round and gives the
median of those ratios with a 95 % interval for it (a bootstrap over the rounds: it means little
below ten rounds) and the number of rounds in which the server had the lower figure. `--replot
JSON...` prints the tables of earlier `--json` runs again, the rounds of several runs of the same
load pooled.
"""

import argparse
import json
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = "epoll"
TICKS = os.sysconf("SC_CLK_TCK")
# An environment item of a server command: a variable's name, then `=` (not `--option=value`).
ENV_ITEM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
METRICS = ("msgs_per_s", "p99_us", "cpu_us_per_msg", "user_us_per_msg", "syscalls_per_msg")


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")


def select(commands, wanted):
    """The names of `commands` in their order, only those in the comma-separated `wanted` if it
    is given; exits naming any wanted server that is not known."""
    names = list(commands)
    if wanted:
        wanted = wanted.split(",")
        unknown = [n for n in wanted if n not in commands]
        if unknown:
            sys.exit(f"unknown servers {unknown}; known: {names}")
        names = [n for n in names if n in wanted]
    return names


def build():
    cmd = ["cargo", "build", "--release", "-p", "overlapped-cli", "-p", "overlapped-bench"]
    subprocess.run(cmd, cwd=ROOT, check=True)


def servers(bin_dir, batch_us=50):
    """The servers to compare: name -> command (without --port). The batch window's variants wait
    `batch_us` microseconds, and are named after it (`overlapped-port-batch50` by default).

    A command may begin with `NAME=value` items: environment variables for the server (see
    `split_env`). Each of our models runs twice: on the backend the library picks by itself
    (io_uring here) and, as `overlapped-MODEL-epoll`, with the epoll backend forced, so that the
    epoll backend's cost per message is measured in the same rounds as the hand-written epoll
    server."""
    ours = os.path.join(bin_dir, "overlapped")
    found = {REFERENCE: [os.path.join(bin_dir, "echo-epoll")]}
    for peer in ("tokio", "monoio", "compio", "tokio-uring"):
        found[peer] = [os.path.join(bin_dir, "echo-" + peer)]
    # io_uring by hand, without a library's model: what the port model is measured against to
    # tell what the model costs, waking for every completion and with the batch window.
    found["uring"] = [os.path.join(bin_dir, "echo-uring")]
    window = ["--batch-us", str(batch_us)]
    found[f"uring-batch{batch_us}"] = found["uring"] + window
    # Without registered files and ring descriptor, as the port model: what they are worth.
    found["uring-plain"] = found["uring"] + ["--plain"]
    help_text = subprocess.run([ours, "echo-server", "-h"], capture_output=True, text=True).stdout
    values = re.search(r"--model <MODEL>.*?\[possible values: ([^\]]*)\]", help_text, re.S)
    models = [m.strip() for m in values.group(1).split(",")] if values else ["event"]
    one_thread = ["--threads", "1"] if "--threads" in help_text else []
    for model in ("event", "routine", "port"):
        if model in models:
            extra = one_thread if model == "port" else []
            found["overlapped-" + model] = [ours, "echo-server", "--model", model] + extra
    for model in ("event", "routine", "port"):
        if model in models:
            found[f"overlapped-{model}-epoll"] = ["OVERLAPPED_BACKEND=epoll"] + \
                found["overlapped-" + model]
    # The port model's tunings: a receive buffer kept posted (one system call less per
    # message), and the opt-in batch window of 50 us (CPU first).
    if "overlapped-port" in found and "--pin-buffers" in help_text:
        found["overlapped-port-pinned"] = found["overlapped-port"] + ["--pin-buffers"]
        found["overlapped-port-pinned-epoll"] = found["overlapped-port-epoll"] + ["--pin-buffers"]
    # Zero-byte receives (the Windows servers' idiom, and the port model's default before pooled
    # receives): no buffer per idle connection, one more system call per message.
    if "overlapped-port" in found and "--pool-buffers" in help_text:
        found["overlapped-port-zerobyte"] = found["overlapped-port"] + ["--pool-buffers", "0"]
        found["overlapped-port-zerobyte-epoll"] = \
            found["overlapped-port-epoll"] + ["--pool-buffers", "0"]
    # Pooled receives posted one at a time, as before receiving ahead (io_uring's multishot
    # receive) became the default.
    if "overlapped-port" in found and "--no-receive-ahead" in help_text:
        found["overlapped-port-noahead"] = found["overlapped-port"] + ["--no-receive-ahead"]
    if "overlapped-port" in found and "--batch-us" in help_text:
        found[f"overlapped-port-batch{batch_us}"] = found["overlapped-port"] + window
        if "overlapped-port-pinned" in found:
            found[f"overlapped-port-batch{batch_us}-pinned"] = \
                found["overlapped-port-pinned"] + window
    return found


def add_variants(commands, specs):
    """Adds the servers that `--variant` defines to `commands`. Each spec is `NAME=SERVER
    [ITEM...]` (words split as a shell would): NAME runs SERVER's command with the items added,
    the leading `VAR=value` items to its environment and the rest to its arguments. So a setting
    that is not among the servers above is measured by command, in the same rounds, with nothing
    edited: `--variant 'overlapped-port-pool256=overlapped-port --pool-buffers 256'`."""
    for spec in specs:
        name, _, rest = spec.partition("=")
        words = shlex.split(rest)
        if not name or not words:
            sys.exit(f"--variant {spec!r}: expected NAME=SERVER [ITEM...]")
        if name in commands:
            sys.exit(f"--variant {spec!r}: {name} is a server already")
        if words[0] not in commands:
            sys.exit(f"--variant {spec!r}: unknown server {words[0]}; known: {list(commands)}")
        env, argv = split_env(commands[words[0]])
        added_env, added_args = split_env(words[1:])
        env.update(added_env)
        commands[name] = [f"{k}={v}" for k, v in env.items()] + argv + added_args


def with_baseline(names, commands, ours, baseline):
    """`names` with, after each server that runs our binary `ours`, the same server run with
    the `baseline` binary instead, named NAME@base (added to `commands`)."""
    if not os.access(baseline, os.X_OK):
        sys.exit(f"--baseline {baseline}: not an executable")
    out = []
    for name in names:
        out.append(name)
        if ours in commands[name]:
            commands[name + "@base"] = [baseline if c == ours else c for c in commands[name]]
            out.append(name + "@base")
    return out


def split_env(cmd):
    """`["A=1", "prog", "arg"]` -> `({"A": "1"}, ["prog", "arg"])`: the leading `NAME=value`
    items of a server command are its environment."""
    env = {}
    while cmd and ENV_ITEM.match(cmd[0]):
        name, value = cmd[0].split("=", 1)
        env[name] = value
        cmd = cmd[1:]
    return env, cmd


def describe(cmd):
    """A server command for the report: environment, program name, arguments."""
    env, argv = split_env(cmd)
    return [f"{k}={v}" for k, v in env.items()] + [os.path.basename(argv[0])] + argv[1:]


def cpu_seconds(pid):
    """The process's (user, user + system) CPU seconds so far, all threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of the file (utime, stime); [0] here is field 3.
    user, system = int(fields[11]) / TICKS, int(fields[12]) / TICKS
    return user, user + system


def perf_usable():
    if not shutil.which("perf"):
        return False
    probe = subprocess.run(
        ["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true"],
        capture_output=True, text=True)
    return probe.returncode == 0 and "raw_syscalls:sys_enter" in probe.stderr \
        and "not supported" not in probe.stderr


def count_syscalls(pid, seconds):
    """System calls the process makes in the next `seconds` (all threads), or None."""
    run = subprocess.run(
        ["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", str(pid), "--",
         "sleep", f"{seconds:.3f}"], capture_output=True, text=True)
    for line in run.stderr.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[2] == "raw_syscalls:sys_enter" and parts[0].isdigit():
            return int(parts[0])
    return None


def start_server(cmd, cpu="0"):
    env, argv = split_env(cmd)
    pin = ["taskset", "-c", cpu] if cpu is not None else []
    proc = subprocess.Popen(pin + argv + ["--port", "0"], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    match = re.match(r"listening on (\S+)", line)
    if not match:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{argv[0]} did not announce its address (said {line!r})")
    return proc, match.group(1)


def run_once(name, cmd, bench_bin, load, args, use_perf):
    """One server, one run: returns a dict of metrics (None where not measured)."""
    proc, addr = start_server(cmd)
    try:
        bench = [bench_bin, "bench", "--addr", addr, "--json", "--threads", "1",
                 "--warmup", str(args.warmup), "--duration", str(args.duration)] + load
        started = time.monotonic()
        client = subprocess.Popen(["taskset", "-c", "1"] + bench,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Sample inside the measured window, half a second in from each end.
        margin = min(0.5, args.duration / 4)
        time.sleep(max(0.0, started + args.warmup + margin - time.monotonic()))
        window = args.duration - 2 * margin
        (user0, cpu0), t0 = cpu_seconds(proc.pid), time.monotonic()
        syscalls = count_syscalls(proc.pid, window) if use_perf else None
        if syscalls is None:
            time.sleep(max(0.0, t0 + window - time.monotonic()))
        (user1, cpu1), t1 = cpu_seconds(proc.pid), time.monotonic()
        out, err = client.communicate(timeout=args.warmup + args.duration + 60)
        if client.returncode != 0:
            raise RuntimeError(f"bench failed against {name}: {err.strip()}")
        result = json.loads(out)
        rate = result["msgs_per_s"]
        messages = rate * (t1 - t0)
        return {
            "msgs_per_s": rate,
            "p99_us": result["latency_us"]["p99"],
            "cpu_us_per_msg": (cpu1 - cpu0) * 1e6 / messages if messages else None,
            "user_us_per_msg": (user1 - user0) * 1e6 / messages if messages else None,
            "syscalls_per_msg": syscalls / (rate * window) if syscalls and rate else None,
            "errors": result["errors"],
            "first_error": result["first_error"],
        }
    finally:
        proc.kill()
        proc.wait()


def run_mode(mode, load, names, commands, args, use_perf, rounds):
    """Alternating rounds; returns {server: [metrics per round]}."""
    runs = {name: [] for name in names}
    for r in range(rounds):
        for name in names:
            try:
                m = run_once(name, commands[name], args.bench_bin, load, args, use_perf)
            except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as e:
                print(f"  {mode} round {r + 1}: {name}: {e}", file=sys.stderr)
                m = {k: None for k in METRICS}
                m["errors"], m["first_error"] = None, str(e)
            runs[name].append(m)
            print(f"  {mode} round {r + 1}/{rounds} {name:18} {fmt(m['msgs_per_s'], 0):>9} msg/s"
                  f"  p99 {fmt(m['p99_us'], 0):>7} us  cpu {fmt(m['cpu_us_per_msg'], 2):>6} us/msg"
                  f"  syscalls {fmt(m['syscalls_per_msg'], 2):>5}/msg  errors {m['errors']}",
                  file=sys.stderr)
    return runs


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs, offered=None):
    """Per server: raw medians, and medians of the within-round ratios to the reference.

    With an offered rate, `held` counts the rounds whose achieved rate was within 3 % of it: in
    the others the server (or the machine) fell behind, and latency and CPU per message describe
    an overloaded server, not the same load."""
    summary = {}
    ref = runs.get(REFERENCE, [])
    for name, rounds in runs.items():
        row = {"raw": {}, "ratio": {}, "errors": sum(m["errors"] or 0 for m in rounds),
               "failed_runs": sum(1 for m in rounds if m["msgs_per_s"] is None),
               "rounds": len(rounds)}
        if offered:
            row["held"] = sum(1 for m in rounds if (m["msgs_per_s"] or 0) >= 0.97 * offered)
        for metric in METRICS:
            row["raw"][metric] = median(m.get(metric) for m in rounds)
            ratios = []
            for mine, theirs in zip(rounds, ref):
                if mine.get(metric) is not None and theirs.get(metric):
                    ratios.append(mine[metric] / theirs[metric])
            row["ratio"][metric] = median(ratios)
        summary[name] = row
    return summary


def versus(runs, other, metric="cpu_us_per_msg", resamples=2000):
    """Per server: its `metric` divided by `other`'s in the same round, summed up over the rounds
    as the median ratio, a 95 % interval for that median (bootstrap: the rounds drawn again with
    replacement `resamples` times, with a fixed seed so that a replot prints the same), and how
    many rounds the server had the lower figure in."""
    rows = {}
    rng = random.Random(1)
    for name, rounds in runs.items():
        if name == other:
            continue
        ratios = [mine[metric] / theirs[metric] for mine, theirs in zip(rounds, runs[other])
                  if mine.get(metric) is not None and theirs.get(metric)]
        if not ratios:
            continue
        medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios)))
                         for _ in range(resamples))
        low, high = medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]
        below = sum(1 for r in ratios if r < 1)
        rows[name] = (statistics.median(ratios), low, high, below, len(ratios))
    return rows


def versus_table(title, rows, other):
    lines = [title, "",
             f"| server | CPU ÷ {other} | 95 % interval of the median | rounds below {other} |",
             "|---|---:|---:|---:|"]
    for name, (med, low, high, below, n) in rows.items():
        lines.append(f"| {name} | {med:.3f} | {low:.3f}–{high:.3f} | {below}/{n} |")
    return "\n".join(lines)


def fmt(value, digits):
    return "n/a" if value is None else f"{value:,.{digits}f}"


def table(title, summary):
    lines = [title, "",
             "| server | msg/s | rate held | p99 µs | CPU µs/msg | user µs/msg | syscalls/msg "
             "| msg/s ÷ ref | p99 ÷ ref | CPU ÷ ref | syscalls ÷ ref | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in summary.items():
        raw, ratio = row["raw"], row["ratio"]
        errors = str(row["errors"]) + (f" ({row['failed_runs']} runs failed)"
                                       if row["failed_runs"] else "")
        held = f"{row['held']}/{row['rounds']}" if "held" in row else "—"
        lines.append(
            f"| {name} | {fmt(raw['msgs_per_s'], 0)} | {held} | {fmt(raw['p99_us'], 0)} "
            f"| {fmt(raw['cpu_us_per_msg'], 2)} | {fmt(raw['user_us_per_msg'], 2)} "
            f"| {fmt(raw['syscalls_per_msg'], 2)} "
            f"| {fmt(ratio['msgs_per_s'], 2)} | {fmt(ratio['p99_us'], 2)} "
            f"| {fmt(ratio['cpu_us_per_msg'], 2)} | {fmt(ratio['syscalls_per_msg'], 2)} "
            f"| {errors} |")
    return "\n".join(lines)


def svg(runs, summary, title):
    """A horizontal bar chart of median CPU µs per message, with each round as a dot."""
    names = list(summary)
    values = [summary[n]["raw"]["cpu_us_per_msg"] or 0 for n in names]
    points = [v for n in names for v in (m["cpu_us_per_msg"] for m in runs[n]) if v]
    top = max(points + values + [1e-9]) * 1.1
    left, width, bar, gap = 150, 460, 26, 12
    height = 70 + len(names) * (bar + gap) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" '
           f'height="{height}" font-family="sans-serif" font-size="13">',
           f'<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="22" font-size="15" font-weight="bold">{esc(title)}</text>',
           '<text x="10" y="42" fill="#555">server CPU µs per message (utime+stime), '
           'bar = median, dots = rounds; lower is better</text>']
    for i, (name, value) in enumerate(zip(names, values)):
        y = 60 + i * (bar + gap)
        w = width * value / top
        color = "#888" if name == REFERENCE else ("#d62" if name.startswith("overlapped")
                                                   else "#48a")
        out.append(f'<text x="{left - 8}" y="{y + bar * 0.65}" text-anchor="end">'
                   f'{esc(name)}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar}" fill="{color}"/>')
        out.append(f'<text x="{left + w + 6:.1f}" y="{y + bar * 0.65}">{value:.2f}</text>')
        for m in runs[name]:
            if m["cpu_us_per_msg"]:
                x = left + width * m["cpu_us_per_msg"] / top
                out.append(f'<circle cx="{x:.1f}" cy="{y + bar / 2}" r="3" fill="black" '
                           f'fill-opacity="0.6"/>')
    axis_y = 60 + len(names) * (bar + gap)
    out.append(f'<line x1="{left}" y1="{axis_y}" x2="{left + width}" y2="{axis_y}" '
               f'stroke="black"/>')
    for k in range(5):
        v = top * k / 4
        x = left + width * k / 4
        out.append(f'<text x="{x:.1f}" y="{axis_y + 16}" text-anchor="middle" '
                   f'fill="#555">{v:.2f}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def esc(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# The settings that define a mode's load: runs pooled by `--replot` must share them.
LOAD_SETTINGS = ("rate", "connections", "depth", "size", "unpaced_connections", "unpaced_depth")


def pooled(reports):
    """One report of several runs' rounds: per mode, the servers every report has, with their
    rounds one run after another (rounds stay whole, so within-round ratios still pair up)."""
    first = reports[0]["settings"]
    for report in reports[1:]:
        differ = [k for k in LOAD_SETTINGS if report["settings"].get(k) != first.get(k)]
        if differ:
            sys.exit(f"--replot: the runs differ in {', '.join(differ)}: not pooled")
    settings = dict(first)
    result = {"settings": settings}
    for mode, count in (("paced", "rounds"), ("unpaced", "unpaced_rounds")):
        if not all(mode in report for report in reports):
            continue
        names = [name for name in reports[0][mode]["runs"]
                 if all(name in report[mode]["runs"] for report in reports)]
        runs = {name: [r for report in reports for r in report[mode]["runs"][name]]
                for name in names}
        settings[count] = min(len(rounds) for rounds in runs.values()) if runs else 0
        result[mode] = {"runs": runs}
    return result


def replot(args):
    reports = []
    for path in args.replot:
        with open(path) as f:
            reports.append(json.load(f))
    report = pooled(reports)
    settings = report["settings"]
    if "paced" in report:
        runs = report["paced"]["runs"]
        summary = summarize(runs, settings["rate"])
        print(table(paced_title(settings), summary) + "\n")
        print_versus("Paced", runs, args.versus)
        if args.svg:
            with open(args.svg, "w") as f:
                f.write(svg(runs, summary, svg_title(settings)))
    if "unpaced" in report:
        runs = report["unpaced"]["runs"]
        print(table(unpaced_title(settings), summarize(runs)) + "\n")
        print_versus("Unpaced", runs, args.versus)


def print_versus(mode, runs, other):
    """The `--versus` table of one mode, if asked for; says so if that server did not run."""
    if not other:
        return
    if other not in runs:
        print(f"{mode}: --versus {other}: that server did not run\n")
        return
    print(versus_table(f"{mode}: CPU per message ÷ {other}'s, within rounds", versus(runs, other),
                       other) + "\n")


def paced_title(s):
    return (f"Paced: {s['connections']} connections, depth {s['depth']}, {s['size']} B, "
            f"offered {s['rate']:,} msg/s; medians of {s['rounds']} rounds")


def unpaced_title(s):
    return (f"Unpaced: {s['unpaced_connections']} connections, depth {s['unpaced_depth']}, "
            f"{s['size']} B; medians of {s['unpaced_rounds']} rounds")


def svg_title(s):
    return f"CPU per message, offered {s['rate']:,} msg/s, {s['connections']} connections"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=["paced", "unpaced", "both"], default="both")
    p.add_argument("--rounds", type=int, default=5, help="rounds of the paced mode")
    p.add_argument("--unpaced-rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--rate", type=int, default=50_000, help="paced: msgs/s offered in total")
    p.add_argument("--connections", type=int, default=100, help="paced: connections")
    p.add_argument("--depth", type=int, default=1, help="paced: depth")
    p.add_argument("--unpaced-connections", type=int, default=1000)
    p.add_argument("--unpaced-depth", type=int, default=4)
    p.add_argument("--size", type=int, default=64, help="message bytes")
    p.add_argument("--servers", help="comma-separated subset of the servers to run")
    p.add_argument("--batch-us", type=int, default=50,
                   help="the batch window's variants' window in microseconds (in their names)")
    p.add_argument("--variant", metavar="'NAME=SERVER ITEM...'", action="append", default=[],
                   help="one more server: SERVER's command with the items added (VAR=value "
                        "items to its environment, the others to its arguments); repeatable")
    p.add_argument("--no-build", action="store_true", help="use the binaries as they are")
    p.add_argument("--baseline", metavar="BIN",
                   help="another build of `overlapped` (before a change, say): each of our "
                        "selected servers also runs with it, as NAME@base, in the same rounds")
    p.add_argument("--versus", metavar="SERVER",
                   help="also print each server's CPU per message divided by SERVER's in the "
                        "same round: the median, a 95 %% interval for it, and the rounds below")
    p.add_argument("--json", help="write every run and the summaries to this file")
    p.add_argument("--svg", help="write the paced CPU-per-message plot to this file")
    p.add_argument("--replot", metavar="JSON", nargs="+",
                   help="run nothing: print the tables (and --svg) of earlier --json files; "
                        "several runs of the same load are pooled, round by round, for the "
                        "servers they all ran")
    args = p.parse_args()
    if args.replot:
        replot(args)
        return

    if not args.no_build:
        build()
    bin_dir = os.path.join(target_dir(), "release")
    args.bench_bin = os.path.join(bin_dir, "overlapped")
    commands = servers(bin_dir, args.batch_us)
    add_variants(commands, args.variant)
    names = select(commands, args.servers)
    if args.baseline:
        names = with_baseline(names, commands, args.bench_bin, os.path.abspath(args.baseline))
    if args.versus and args.versus not in names:
        sys.exit(f"--versus {args.versus}: not among the servers to run {names}")
    use_perf = perf_usable()
    print(f"servers: {', '.join(names)}; perf syscall counting: "
          f"{'yes' if use_perf else 'n/a'}", file=sys.stderr)

    report = {"servers": {n: describe(commands[n]) for n in names},
              "settings": {k: v for k, v in vars(args).items() if k not in ("json", "svg", "replot", "bench_bin")}}
    common = ["--size", str(args.size)]
    if args.mode in ("paced", "both"):
        load = ["--connections", str(args.connections), "--depth", str(args.depth),
                "--rate", str(args.rate)] + common
        runs = run_mode("paced", load, names, commands, args, use_perf, args.rounds)
        summary = summarize(runs, args.rate)
        print(table(paced_title(vars(args)), summary) + "\n")
        print_versus("Paced", runs, args.versus)
        report["paced"] = {"runs": runs, "summary": summary}
        if args.svg:
            with open(args.svg, "w") as f:
                f.write(svg(runs, summary, svg_title(vars(args))))
    if args.mode in ("unpaced", "both"):
        load = ["--connections", str(args.unpaced_connections),
                "--depth", str(args.unpaced_depth)] + common
        runs = run_mode("unpaced", load, names, commands, args, use_perf, args.unpaced_rounds)
        summary = summarize(runs)
        print(table(unpaced_title(vars(args)), summary) + "\n")
        print_versus("Unpaced", runs, args.versus)
        report["unpaced"] = {"runs": runs, "summary": summary}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
