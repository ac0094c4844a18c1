//! `overlapped demo` runs the whole scenario and says what happened.
//!
//! The demo checks each step itself and exits non-zero if the library misbehaves; this test runs
//! the built binary, bounds its run time, and looks for the lines a reader relies on.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The demo's own steps time out after 10 s each; this bounds the whole run.
const RUN_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn demo_exits_zero_and_prints_each_step() {
    let out = run_demo(None);
    assert!(out.contains("backend: "), "no backend line:\n{out}");
}

#[test]
fn demo_on_the_epoll_backend() {
    let out = run_demo(Some("epoll"));
    assert!(out.contains("backend: epoll"), "not on epoll:\n{out}");
}

/// Runs the demo, forcing `backend` if given; checks that it succeeded and printed every step,
/// and returns its output.
fn run_demo(backend: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_overlapped"));
    command.arg("demo");
    if let Some(backend) = backend {
        command.env("OVERLAPPED_BACKEND", backend);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the demo");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the demo") {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the demo did not finish within {RUN_LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().expect("stdout reader").expect("read stdout");
    let err = err.join().expect("stderr reader").expect("read stderr");
    assert!(
        status.success(),
        "demo failed with {status}\nstdout:\n{out}\nstderr:\n{err}"
    );

    for needle in [
        "listening on 127.0.0.1:",
        "before any data: pending",
        "WSA_IO_INCOMPLETE",
        "send of \"Network is Computer!\" with an event: ",
        "wait for any of [receive, send]: index ",
        "send result from its overlapped object: 20 bytes",
        "receive result from its overlapped object: 20 bytes, flags 0x0",
        "received message: \"Network is Computer!\"",
        "buffer 1 = \"dead\", buffer 2 = \"beefs\"",
        "zero-byte receive posted with no data waiting: pending",
        "it completed with 0 bytes",
        "an overlapped receive, notified through a completion routine",
        "receive posted with a completion routine, before any data: pending",
        "non-alertable wait (WaitForSingleObjectEx(.., FALSE)) for 100 ms: WAIT_TIMEOUT, routine not run",
        "the routine ran inside it, then the sleep returned WAIT_IO_COMPLETION (0xC0)",
        "routine called with error 0, 20 bytes, flags 0x0, the overlapped object holding \"Network is Computer!\"",
        "the overlapped object's event was left alone (S22)",
        "its routine was queued all the same (S30)",
        "an echo through a completion port drained by two workers",
        "accept packet: key 1, 0 bytes; connection from 127.0.0.1:",
        "took a packet: key 2, 20 bytes (a receive: the worker echoes it)",
        "took a packet: key 2, 20 bytes (the echo, sent)",
        "client received the echo: \"Network is Computer!\"",
        "took a packet: key 99, 7 bytes (posted by hand)",
        "woke with ERROR_ABANDONED_WAIT_0 (735)",
        "engine counters: ",
        "demo finished",
    ] {
        assert!(
            out.contains(needle),
            "the demo's output lacks {needle:?}:\n{out}"
        );
    }
    let thread_line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("routine ran on the issuing thread: "))
        .unwrap_or_else(|| panic!("no line on the routine's thread:\n{out}"));
    let ids: Vec<&str> = thread_line.split(" = ").collect();
    assert!(
        ids.len() == 2 && ids[0] == ids[1],
        "the routine's thread and the issuer's differ: {thread_line}"
    );
    out
}
