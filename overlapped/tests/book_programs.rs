//! The textbook's programs, run against each other: `overlapped_recv <port>` and
//! `overlapped_send 127.0.0.1 <port>` exchange "Network is Computer!" on loopback and print
//! exactly what the book's programs print. Also their argument and connection errors.
//!
//! The example binaries are built by `cargo test` next to the test binaries
//! (`target/<profile>/examples/`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long any one program may run before it is killed and the test fails.
const LIMIT: Duration = Duration::from_secs(20);

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in <target>/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo test -p overlapped` (which builds the examples) or \
         `cargo build -p overlapped --examples` first",
        path.display()
    );
    path
}

/// A child process that is killed if the test ends without waiting for it.
struct Running(Option<Child>);

impl Running {
    fn start(name: &str, args: &[&str]) -> Running {
        let child = Command::new(example(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Running(Some(child))
    }

    /// Waits for the program to exit, at most `LIMIT`; kills it and fails the test after that.
    fn finish(mut self) -> Output {
        let mut child = self.0.take().expect("not finished yet");
        let deadline = Instant::now() + LIMIT;
        loop {
            match child.try_wait().expect("try_wait") {
                Some(_) => return child.wait_with_output().expect("collect output"),
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let out = child.wait_with_output().expect("collect output");
                    panic!("killed after {LIMIT:?}: {}", describe(&out));
                }
                None => thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run(name: &str, args: &[&str]) -> Output {
    Running::start(name, args).finish()
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn describe(out: &Output) -> String {
    format!(
        "{}, stdout {:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A TCP port that was free a moment ago.
fn free_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    probe.local_addr().expect("local address").port()
}

#[test]
fn send_and_recv_exchange_the_message() {
    let port = free_port().to_string();
    let receiver = Running::start("overlapped_recv", &[&port]);

    // The receiver needs a moment to listen; until it does, the sender's connect is refused and
    // it exits with that error. Try again until it connects.
    let deadline = Instant::now() + LIMIT;
    let sent = loop {
        let out = run("overlapped_send", &["127.0.0.1", &port]);
        if out.status.success() {
            break out;
        }
        let refused = String::from_utf8_lossy(&out.stderr).starts_with("connect() error!");
        assert!(refused, "the sender failed: {}", describe(&out));
        assert!(Instant::now() < deadline, "the receiver never listened");
        thread::sleep(Duration::from_millis(20));
    };
    let received = receiver.finish();
    assert!(received.status.success(), "{}", describe(&received));

    // S3: a send done at once and a pending one are both legal; only the pending one says so.
    let mut sent_lines = lines(&sent.stdout);
    if sent_lines.first().map(String::as_str) == Some("Background data send") {
        sent_lines.remove(0);
    }
    assert_eq!(sent_lines, ["Send data size: 21"], "{}", describe(&sent));

    let mut received_lines = lines(&received.stdout);
    let last = received_lines.pop();
    assert_eq!(
        last.as_deref(),
        Some("Received message: Network is Computer!"),
        "{}",
        describe(&received)
    );
    assert!(
        received_lines
            .iter()
            .all(|l| l == "Background data receive"),
        "{}",
        describe(&received)
    );
    assert!(sent.stderr.is_empty() && received.stderr.is_empty());
}

#[test]
fn wrong_arguments_print_the_usage_and_fail() {
    for (name, args, usage) in [
        ("overlapped_send", &["127.0.0.1"][..], "Usage: "),
        ("overlapped_send", &["127.0.0.1", "1", "2"][..], "Usage: "),
        ("overlapped_recv", &[][..], "Usage : "),
        ("overlapped_recv", &["1", "2"][..], "Usage : "),
    ] {
        let out = run(name, args);
        assert!(!out.status.success(), "{name} {args:?}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with(usage),
            "{name} {args:?}: {}",
            describe(&out)
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn bad_addresses_and_ports_are_refused() {
    for (name, args) in [
        ("overlapped_send", &["127.0.0.256", "9190"][..]),
        ("overlapped_send", &["127.0.0.1", "port"][..]),
        ("overlapped_send", &["127.0.0.1", "0"][..]),
        ("overlapped_send", &["127.0.0.1", "65536"][..]),
        ("overlapped_recv", &["-1"][..]),
    ] {
        let out = run(name, args);
        assert!(!out.status.success(), "{name} {args:?}: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("invalid "), "{name} {args:?}: {err}");
    }
}

#[test]
fn a_refused_connection_is_an_error() {
    // Nothing listens on a port that was just freed.
    let port = free_port().to_string();
    let out = run("overlapped_send", &["127.0.0.1", &port]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(
        lines(&out.stderr),
        ["connect() error! (WSAECONNREFUSED 10061)"],
        "{}",
        describe(&out)
    );
    assert!(out.stdout.is_empty());
}
