//! The book's completion-port programs: `iocp_echo_serv <port>` serving `stable_echo_clnt
//! 127.0.0.1 <port>` (driven through its standard input) and several raw TCP clients at once;
//! the client against a server that closes; and their argument errors.
//!
//! The example binaries are built by `cargo test` next to the test binaries
//! (`target/<profile>/examples/`). Every wait is bounded: a program still running after
//! [`LIMIT`] is killed and the test fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Output;
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::Duration;

mod programs;
use programs::{connect_when_listening, describe, free_port, Program, LIMIT};

const PROMPT: &str = "Input message(Q to quit): ";

/// The echo server on a free port, listening, with its stdout and stderr drained: (server,
/// port, stderr lines).
fn start_server() -> (Program, u16, Receiver<String>) {
    let port = free_port();
    let mut server = Program::start("iocp_echo_serv", &[&port.to_string()]);
    let _stdout = server.lines(false);
    let stderr = server.lines(true);
    // Once a connection is accepted the server listens; this one closes at once.
    drop(connect_when_listening(port));
    (server, port, stderr)
}

/// Runs the client with `input` on its stdin, then the end of the input.
fn run_client(port: u16, input: &str) -> Output {
    let mut client = Program::start("stable_echo_clnt", &["127.0.0.1", &port.to_string()]);
    let mut stdin = client.stdin();
    stdin.write_all(input.as_bytes()).expect("write the input");
    drop(stdin);
    client.finish()
}

/// What the client prints for `messages` echoed, before the prompt it leaves the program at.
fn transcript(messages: &[&str]) -> String {
    let mut out = String::from("Connected...........\n");
    for m in messages {
        out += &format!("{PROMPT}Message from server: {m}\n");
    }
    out + PROMPT
}

#[test]
fn the_client_echoes_line_by_line_and_quits_with_q() {
    let (mut server, port, _stderr) = start_server();
    let mut client = Program::start("stable_echo_clnt", &["127.0.0.1", &port.to_string()]);
    let mut stdin = client.stdin();
    let lines = client.lines(false);
    let next = || lines.recv_timeout(LIMIT).expect("a line from the client");
    assert_eq!(next(), "Connected...........");
    // One message at a time: the echo is printed before the next line is given. The long one
    // is more than the server's buffer, so its echo comes back in several pieces.
    let long = "0123456789".repeat(35);
    for message in ["Hello, IOCP!", "second message", &long, "q is not Q "] {
        writeln!(stdin, "{message}").expect("write a line");
        stdin.flush().expect("flush");
        assert_eq!(next(), format!("{PROMPT}Message from server: {message}"));
    }
    writeln!(stdin, "Q").expect("write Q");
    let out = client.finish();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(out.stderr.is_empty(), "{}", describe(&out));
    // After Q, the last prompt stays on its line (no line end): nothing else was printed.
    drop(stdin);
    let rest: Vec<String> = lines.iter().collect();
    assert_eq!(rest, [PROMPT]);
    server.assert_running();
}

#[test]
fn the_end_of_the_input_or_a_lowercase_q_ends_the_client() {
    let (mut server, port, _stderr) = start_server();
    let out = run_client(port, "one\ntwo\n");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        transcript(&["one", "two"])
    );
    // A last line with no line end is sent as it is.
    let out = run_client(port, "three\nfour");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        transcript(&["three", "four"])
    );
    let out = run_client(port, "five\nq\nnever sent\n");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), transcript(&["five"]));
    assert!(out.stderr.is_empty(), "{}", describe(&out));
    server.assert_running();
}

#[test]
fn the_client_reports_a_server_that_closed() {
    // A server that reads the first line, then closes without echoing it.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = thread::spawn(move || {
        let (conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(LIMIT)).expect("read timeout");
        let mut line = String::new();
        BufReader::new(&conn).read_line(&mut line).expect("read");
        line
    });
    let out = run_client(port, "hello\nagain\n");
    assert_eq!(server.join().expect("the server thread"), "hello\n");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("Connected...........\n{PROMPT}")
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "The server closed the connection.\n"
    );
}

#[test]
fn the_server_echoes_many_clients_at_once_and_survives_a_reset() {
    const CLIENTS: usize = 8;
    const ROUNDS: usize = 3;
    let (mut server, port, stderr) = start_server();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            thread::spawn(move || {
                let mut conn = connect_when_listening(port);
                for round in 0..ROUNDS {
                    let message: Vec<u8> = (0..(i * 700 + round * 50 + 1))
                        .map(|j| (i * 31 + round * 7 + j) as u8)
                        .collect();
                    conn.write_all(&message).expect("send to the server");
                    let mut echo = vec![0; message.len()];
                    conn.read_exact(&mut echo).expect("read the echo");
                    assert!(echo == message, "client {i}, round {round}: another echo");
                }
                conn
            })
        })
        .collect();
    let conns: Vec<TcpStream> = clients
        .into_iter()
        .map(|c| c.join().expect("a client thread"))
        .collect();

    // A client that resets its connection while the server's receive is pending: that packet
    // fails, the server closes that connection only, says so, and goes on.
    let mut reset = connect_when_listening(port);
    reset.write_all(b"ping").expect("send");
    let mut echo = [0; 4];
    reset.read_exact(&mut echo).expect("echo");
    let reset = overlapped::Socket::from(reset);
    reset.set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
    drop(reset);
    let line = stderr
        .recv_timeout(LIMIT)
        .expect("the server reports the reset");
    assert!(
        line.starts_with("WSARecv() error (WSAECONNRESET 10054), client 127.0.0.1:"),
        "{line}"
    );

    // Everyone else is still served, then closes; the server closes its side too.
    for (i, mut conn) in conns.into_iter().enumerate() {
        let message = format!("after the reset, client {i}");
        conn.write_all(message.as_bytes()).expect("send");
        let mut echo = vec![0; message.len()];
        conn.read_exact(&mut echo).expect("read the echo");
        assert_eq!(echo, message.as_bytes());
        conn.shutdown(Shutdown::Write).expect("shut down");
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).expect("the server closes");
        assert!(rest.is_empty(), "client {i}: unexpected {rest:?}");
    }
    server.assert_running();
    assert!(stderr.try_recv().is_err(), "nothing else went wrong");
}

#[test]
fn wrong_arguments_are_refused() {
    for (name, args, start) in [
        ("iocp_echo_serv", &[][..], "Usage : "),
        ("iocp_echo_serv", &["1", "2"][..], "Usage : "),
        ("iocp_echo_serv", &["0"][..], "invalid port"),
        ("stable_echo_clnt", &["127.0.0.1"][..], "Usage : "),
        (
            "stable_echo_clnt",
            &["127.0.0.256", "9190"][..],
            "invalid IP",
        ),
        (
            "stable_echo_clnt",
            &["127.0.0.1", "port"][..],
            "invalid port",
        ),
    ] {
        let out = Program::start(name, args).finish();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name} {args:?}: {}",
            describe(&out)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with(start), "{name} {args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
    // Nothing listens on a port that was just freed.
    let port = free_port().to_string();
    let out = Program::start("stable_echo_clnt", &["127.0.0.1", &port]).finish();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err, "connect() error! (WSAECONNREFUSED 10061)\n");
}
