//! The textbook's programs, run against each other: `overlapped_recv <port>` (and
//! `cmpl_routines_recv <port>`, its completion-routine twin) and `overlapped_send 127.0.0.1
//! <port>` exchange "Network is Computer!" on loopback and print exactly what the book's
//! programs print; `cmpl_rou_echo_serv <port>` echoes several `std` clients at once. Also their
//! argument and connection errors.
//!
//! The example binaries are built by `cargo test` next to the test binaries
//! (`target/<profile>/examples/`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::{Duration, Instant};

mod programs;
use programs::{connect_when_listening, describe, free_port, run, Program, LIMIT};

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn send_and_recv_exchange_the_message() {
    send_to_receiver("overlapped_recv", &[]);
}

#[test]
fn cmpl_routines_recv_prints_the_message_from_its_routine() {
    // The routine prints the message inside the alertable wait, which then returns
    // WAIT_IO_COMPLETION and the program says so (S28).
    send_to_receiver("cmpl_routines_recv", &["Overlapped I/O Completed"]);
}

/// Runs `receiver <port>` and `overlapped_send 127.0.0.1 <port>` against each other; the
/// receiver must print the message, then `after`, with only `Background data receive` before.
fn send_to_receiver(receiver_name: &str, after: &[&str]) {
    let port = free_port().to_string();
    let receiver = Program::start(receiver_name, &[&port]);

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
    let tail_len = after.len() + 1;
    assert!(received_lines.len() >= tail_len, "{}", describe(&received));
    let tail = received_lines.split_off(received_lines.len() - tail_len);
    let mut expected = vec!["Received message: Network is Computer!"];
    expected.extend_from_slice(after);
    assert_eq!(tail, expected, "{}", describe(&received));
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
        ("cmpl_routines_recv", &[][..], "Usage : "),
        ("cmpl_rou_echo_serv", &["1", "2"][..], "Usage : "),
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
        ("cmpl_routines_recv", &["0"][..]),
        ("cmpl_rou_echo_serv", &["port"][..]),
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

/// Waits for `count` more lines equal to `line`, failing after `LIMIT`; other lines are
/// unexpected.
fn expect_lines(lines: &Receiver<String>, line: &str, count: usize) {
    for i in 0..count {
        let got = lines
            .recv_timeout(LIMIT)
            .unwrap_or_else(|e| panic!("waiting for {line:?} ({i} of {count} seen): {e}"));
        assert_eq!(got, line);
    }
}

#[test]
fn cmpl_rou_echo_serv_echoes_several_connections() {
    const CLIENTS: usize = 5;
    let port = free_port();
    let mut server = Program::start("cmpl_rou_echo_serv", &[&port.to_string()]);
    let lines = server.lines(false);

    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect_when_listening(port)).collect();
    expect_lines(&lines, "Client connected.....", CLIENTS);
    // Every connection has a receive pending at once; echoes go round in turns, twice, so each
    // echo's routine must have posted the next receive.
    for round in 0..2 {
        let messages: Vec<Vec<u8>> = (0..CLIENTS)
            .map(|i| format!("round {round}, client {i}: {}", "x".repeat(i * 300)).into_bytes())
            .collect();
        for (client, message) in clients.iter_mut().zip(&messages) {
            client.write_all(message).expect("send to the server");
        }
        for (i, (client, message)) in clients.iter_mut().zip(&messages).enumerate() {
            let mut echo = vec![0; message.len()];
            client
                .read_exact(&mut echo)
                .unwrap_or_else(|e| panic!("client {i}, round {round}: reading the echo: {e}"));
            assert_eq!(&echo, message, "client {i}, round {round}");
        }
    }

    // A client that resets its connection at once: the server's receive fails (at once or
    // later), it closes that connection and serves on.
    let reset = overlapped::Socket::from(connect_when_listening(port));
    reset.set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
    drop(reset);
    expect_lines(&lines, "Client connected.....", 1);
    expect_lines(&lines, "Client disconnected.....", 1);

    for (i, client) in clients.iter_mut().enumerate() {
        let message = format!("after the reset, client {i}").into_bytes();
        client.write_all(&message).expect("send to the server");
        let mut echo = vec![0; message.len()];
        client.read_exact(&mut echo).expect("read the echo");
        assert_eq!(echo, message);
    }
    // Graceful closes: the server reads 0 bytes (S10), closes its side, and says so.
    for mut client in clients {
        client
            .shutdown(std::net::Shutdown::Write)
            .expect("shut down");
        let mut rest = Vec::new();
        client
            .read_to_end(&mut rest)
            .expect("the server closes too");
        assert!(rest.is_empty(), "nothing more was expected, got {rest:?}");
    }
    expect_lines(&lines, "Client disconnected.....", CLIENTS);
    server.assert_running();
}
