#!/usr/bin/env python3
"""Stress an echo server with one flooding and one quiet connection, over and over.

Each run starts a fresh `overlapped echo-server`, floods it on one connection (200 chunks of
64 KiB, the echo read back and counted by another thread) while a second connection makes 200
small round trips, and checks every echoed byte of the quiet connection and the flood's total.
It stops at the first failure and prints it. Run several copies at once, with other work beside
them, to shake out races:

    for i in 1 2 3; do python3 bench/flood_stress.py --model port --runs 2000 & done

Standard library only. `--bin` picks the `overlapped` binary (default: target/debug), `--backend`
forces one (`uring` or `epoll`), and arguments after `--` go to the server.
"""

import argparse
import os
import socket
import subprocess
import sys
import threading

CHUNK, CHUNKS, ROUNDS = 64 * 1024, 200, 200
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_run(args, extra):
    env = dict(os.environ)
    if args.backend:
        env["OVERLAPPED_BACKEND"] = args.backend
    cmd = [args.bin, "echo-server", "--model", args.model, "--port", "0"] + extra
    srv = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    try:
        host, port = srv.stdout.readline().strip().split()[-1].rsplit(":", 1)
        busy = socket.create_connection((host, int(port)))
        quiet = socket.create_connection((host, int(port)))
        busy.settimeout(10)
        quiet.settimeout(10)
        errors, got = [], [0]
        chunk = bytes(i % 251 for i in range(CHUNK))

        def flood():
            try:
                for _ in range(CHUNKS):
                    busy.sendall(chunk)
                busy.shutdown(socket.SHUT_WR)
            except OSError as e:
                errors.append(("flood", e))

        def drain():
            try:
                while True:
                    data = busy.recv(CHUNK)
                    if not data:
                        return
                    got[0] += len(data)
            except OSError as e:
                errors.append(("drain", e))

        threads = [threading.Thread(target=flood), threading.Thread(target=drain)]
        for t in threads:
            t.start()
        try:
            for r in range(ROUNDS):
                message = (b"round %d " % r) * 3
                quiet.sendall(message)
                back = b""
                while len(back) < len(message):
                    part = quiet.recv(4096)
                    if not part:
                        raise ConnectionError("closed by the server")
                    back += part
                if back != message:
                    errors.append(("quiet", f"echo differs: sent {message!r}, got {back!r}"))
                    break
        except OSError as e:
            errors.append(("quiet", e))
        for t in threads:
            t.join()
        if got[0] != CHUNK * CHUNKS:
            errors.append(("flood total", got[0]))
        return errors
    finally:
        srv.kill()
        srv.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="port", choices=["event", "routine", "port"])
    p.add_argument("--backend", choices=["uring", "epoll"])
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--bin", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "debug", "overlapped"))
    args, extra = p.parse_known_args()
    extra = [a for a in extra if a != "--"]
    for run in range(1, args.runs + 1):
        errors = one_run(args, extra)
        if errors:
            print(f"run {run}: FAILED {errors}", flush=True)
            sys.exit(1)
        if run % 50 == 0:
            print(f"{run} runs", flush=True)
    print(f"{args.runs} runs passed", flush=True)


if __name__ == "__main__":
    main()
