//! `overlapped echo-client` against `overlapped echo-server`: lines go out, echoes come back as
//! `Message from server: ...`, `Q` and the end of the input end the client, and a server that
//! goes away is reported rather than waited on.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// Starts the port-model server on an ephemeral port; returns it and its port.
fn start_server() -> (Child, u16) {
    let mut server = Command::new(env!("CARGO_BIN_EXE_overlapped"))
        .args([
            "echo-server",
            "--model",
            "port",
            "--threads",
            "2",
            "--port",
            "0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut first = String::new();
    let mut lines = BufReader::new(server.stdout.take().expect("stdout is piped"));
    lines
        .read_line(&mut first)
        .expect("read the server's first line");
    // Keep reading what the server prints, so that its writes never meet a closed pipe.
    thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
    let port = first
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {first:?}"));
    (server, port)
}

/// Runs the client with `input` on its standard input; returns its exit success and output.
fn run_client(port: u16, input: &'static [u8]) -> (bool, String, String) {
    let mut client = Command::new(env!("CARGO_BIN_EXE_overlapped"))
        .args(["echo-client", "127.0.0.1", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client");
    let mut stdin = client.stdin.take().expect("stdin is piped");
    let writer = thread::spawn(move || stdin.write_all(input));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = client.try_wait().expect("poll the client") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = client.kill();
            panic!("the client did not finish within {LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    let mut out = String::new();
    let mut err = String::new();
    client
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    client
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.success(), out, err)
}

#[test]
fn echoes_lines_until_q() {
    let (mut server, port) = start_server();
    let (ok, out, err) = run_client(port, b"hello\nNetwork is Computer!\nQ\nnot sent\n");
    let _ = server.kill();
    let _ = server.wait();
    assert!(ok, "client failed:\n{out}\n{err}");
    assert!(out.starts_with("Connected..........."), "{out}");
    assert!(out.contains("Message from server: hello\n"), "{out}");
    assert!(
        out.contains("Message from server: Network is Computer!\n"),
        "{out}"
    );
    assert!(!out.contains("not sent"), "{out}");
    assert_eq!(
        out.matches("Input message(Q to quit): ").count(),
        3,
        "{out}"
    );
}

#[test]
fn the_end_of_input_ends_the_client() {
    let (mut server, port) = start_server();
    let (ok, out, err) = run_client(port, b"one\ntwo");
    let _ = server.kill();
    let _ = server.wait();
    assert!(ok, "client failed:\n{out}\n{err}");
    assert!(out.contains("Message from server: one\n"), "{out}");
    assert!(out.contains("Message from server: two\n"), "{out}");
}

#[test]
fn a_closed_server_is_reported() {
    // A server that accepts and closes at once.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let closer = thread::spawn(move || drop(listener.accept()));
    let (ok, _out, err) = run_client(port, b"anyone there?\n");
    closer.join().unwrap();
    assert!(!ok, "the client should fail");
    assert!(err.contains("the server closed the connection"), "{err}");
}
