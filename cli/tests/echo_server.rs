//! `overlapped echo-server --model event|routine|port`, driven from outside as a user would run
//! it, and the port model with each way of waiting for data.
//!
//! Each test starts the built binary with `--port 0`, reads the port from its
//! `listening on ...` line, talks to it over loopback with plain `std::net` clients, and kills it
//! at the end (also when the test fails, through [`Server`]'s drop). Every read, connect and wait
//! is bounded, so a server that stops answering fails the test instead of hanging it; no assert
//! depends on how fast anything is. Each test runs twice: on the backend the library chooses, and
//! on the epoll backend forced through `OVERLAPPED_BACKEND`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Bound on any single connect, read, write, or wait for the server's first line.
const IO_LIMIT: Duration = Duration::from_secs(30);

/// The backends each test runs on: the library's choice, then epoll forced.
const BACKENDS: [Option<&str>; 2] = [None, Some("epoll")];

/// The notification models each test runs on, with the port model's ways of waiting for data
/// (pooled receives, from the default pool and from one far smaller than the connections, so
/// that some wait for a buffer; a buffer kept posted; zero-byte receives).
const MODELS: [&str; 6] = [
    "event",
    "routine",
    "port",
    "port --pool-buffers 64",
    "port --pin-buffers",
    "port --pool-buffers 0",
];

/// A running server, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts `echo-server --model MODEL`, where `model` may go on with more options.
    fn start(model: &str, backend: Option<&str>) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_overlapped"));
        command.args(["echo-server", "--model"]);
        command.args(model.split_whitespace());
        command.args(["--port", "0"]);
        if let Some(backend) = backend {
            command.env("OVERLAPPED_BACKEND", backend);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the echo server");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        // Reads every line, so that the server never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let mut server = Server {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
        };
        let line = rx
            .recv_timeout(IO_LIMIT)
            .expect("the server announces its address");
        server.addr = line.parse().expect("the announced address parses");
        assert_eq!(server.addr.ip().to_string(), "127.0.0.1");
        server
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect_timeout(&self.addr, IO_LIMIT).expect("connect to the server");
        s.set_read_timeout(Some(IO_LIMIT)).expect("read timeout");
        s.set_write_timeout(Some(IO_LIMIT)).expect("write timeout");
        s
    }

    /// Panics if the server has exited.
    fn assert_running(&mut self) {
        let status = self.child.try_wait().expect("poll the server");
        assert!(status.is_none(), "the server exited: {status:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `message` and checks that exactly it comes back.
fn round_trip(s: &mut TcpStream, message: &[u8]) {
    s.write_all(message).expect("send to the server");
    let mut echo = vec![0; message.len()];
    s.read_exact(&mut echo).expect("read the echo");
    assert_eq!(echo, message, "the echo differs from what was sent");
}

/// A message no other connection sends, of varying length.
fn message(conn: usize, round: usize) -> Vec<u8> {
    let pad = "abcdefghijklmnopqrstuvwxyz".repeat(1 + conn % 7);
    format!(
        "round {round} connection {conn:04} {}|",
        &pad[..(conn * 13) % pad.len()]
    )
    .into_bytes()
}

#[test]
fn serves_a_thousand_concurrent_connections() {
    for model in MODELS {
        for backend in BACKENDS {
            serves_a_thousand_concurrent_connections_on(model, backend);
        }
    }
}

fn serves_a_thousand_concurrent_connections_on(model: &str, backend: Option<&str>) {
    const CONNECTIONS: usize = 1000;
    let mut server = Server::start(model, backend);
    let mut conns: Vec<TcpStream> = (0..CONNECTIONS).map(|_| server.connect()).collect();

    // Two rounds: the second shows that each connection's next receive was posted after its echo.
    for round in 0..2 {
        for (i, s) in conns.iter_mut().enumerate() {
            s.write_all(&message(i, round)).expect("send to the server");
        }
        for (i, s) in conns.iter_mut().enumerate() {
            let expected = message(i, round);
            let mut echo = vec![0; expected.len()];
            s.read_exact(&mut echo).unwrap_or_else(|e| {
                panic!("{model} {backend:?}: connection {i}, round {round}: reading the echo: {e}")
            });
            assert_eq!(
                echo, expected,
                "{model} {backend:?}: connection {i}, round {round}: wrong echo"
            );
        }
    }
    server.assert_running();
}

#[test]
fn resets_and_closes_do_not_stop_the_server() {
    for model in MODELS {
        for backend in BACKENDS {
            resets_and_closes_do_not_stop_the_server_on(model, backend);
        }
    }
}

fn resets_and_closes_do_not_stop_the_server_on(model: &str, backend: Option<&str>) {
    let mut server = Server::start(model, backend);
    let mut survivors: Vec<TcpStream> = (0..4).map(|_| server.connect()).collect();

    for i in 0..30 {
        let mut s = server.connect();
        match i % 3 {
            // Reset: SO_LINGER 0 makes the close send RST.
            0 => {
                round_trip(&mut s, b"before the reset");
                let sock = overlapped::Socket::from(s);
                sock.set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
                drop(sock);
            }
            // Reset while the server's echo is still unread.
            1 => {
                s.write_all(&[b'x'; 10_000]).expect("send to the server");
                let sock = overlapped::Socket::from(s);
                sock.set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
                drop(sock);
            }
            // Graceful close after a round trip; the server reads the end of the stream.
            _ => {
                round_trip(&mut s, b"before the close");
                s.shutdown(Shutdown::Write).expect("shut down");
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).expect("the server closes too");
                assert!(rest.is_empty(), "nothing more was expected, got {rest:?}");
            }
        }
    }

    for (i, s) in survivors.iter_mut().enumerate() {
        round_trip(s, &message(i, 7));
    }
    round_trip(
        &mut server.connect(),
        b"a new connection after the others left",
    );
    server.assert_running();
}

#[test]
fn a_busy_connection_does_not_starve_the_others() {
    for model in MODELS {
        for backend in BACKENDS {
            a_busy_connection_does_not_starve_the_others_on(model, backend);
        }
    }
}

fn a_busy_connection_does_not_starve_the_others_on(model: &str, backend: Option<&str>) {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 200;
    let mut server = Server::start(model, backend);
    let busy = server.connect();
    let mut quiet = server.connect();

    let mut reader = busy.try_clone().expect("clone the busy connection");
    let mut writer = busy;
    let flood = thread::spawn(move || {
        let chunk: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
        for _ in 0..CHUNKS {
            writer.write_all(&chunk).expect("flood the server");
        }
        writer.shutdown(Shutdown::Write).expect("end the flood");
    });
    let drain = thread::spawn(move || {
        let mut got = 0usize;
        let mut buf = vec![0; CHUNK];
        loop {
            let n = reader.read(&mut buf).expect("read the flood's echo");
            if n == 0 {
                return got;
            }
            for (k, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, ((got + k) % CHUNK % 251) as u8, "flood echo corrupted");
            }
            got += n;
        }
    });

    for round in 0..200 {
        round_trip(&mut quiet, &message(round, round));
    }
    flood.join().expect("the flood thread");
    assert_eq!(drain.join().expect("the drain thread"), CHUNK * CHUNKS);
    server.assert_running();
}

/// An option given twice takes its last value: here `--port 1 --port 0` listens on a port the
/// kernel chose, and the server echoes there. A test of the command line, so on the library's
/// choice of backend only.
#[test]
fn an_option_given_twice_takes_its_last_value() {
    let server = Server::start("port --threads 1 --threads 2 --port 1", None);
    assert_ne!(server.addr.port(), 1, "the first --port was taken");
    round_trip(&mut server.connect(), b"the last value wins");
}
