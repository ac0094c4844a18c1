//! The completion-port scenario: an echo through a port drained by two worker threads.
//!
//! The server side is the pattern of the chapter's `IOCPEchoServ`: the listener and the accepted
//! socket are associated with one port, accepting is an overlapped `AcceptEx`, and worker threads
//! wait on the port for packets. The client sends a message; a worker takes the receive's packet
//! (its key, its byte count, and the overlapped object with the buffer), echoes the bytes, and the
//! send's packet follows. A packet posted by hand comes out exactly as posted, and closing the
//! port wakes the workers with `ERROR_ABANDONED_WAIT_0`.

use std::sync::{mpsc, Arc};
use std::thread;

use overlapped::{codes, CompletionPort, Family, Kind, Overlapped, Packet, Socket, Started};

use super::{finished, quoted, Steps, STEP_TIMEOUT};
use crate::failure::{Context, Failure, Outcome};

const MESSAGE: &[u8] = b"Network is Computer!";
const LISTENER_KEY: usize = 1;
const CONNECTION_KEY: usize = 2;
const POSTED_KEY: usize = 99;

/// What a worker saw, sent back to the demo's thread to print in order.
enum Seen {
    Packet {
        worker: usize,
        key: usize,
        bytes: usize,
        what: &'static str,
    },
    Closed {
        worker: usize,
    },
}

pub fn run(steps: &mut Steps) -> Outcome<()> {
    let port: CompletionPort = CompletionPort::new(2).context("creating the port")?;
    steps.step("completion port created with concurrency 2");
    let any = ([127, 0, 0, 1], 0).into();
    let listener = Socket::listen_tcp(any, 16).context("creating the listener")?;
    let addr = listener.local_addr().context("the listener's address")?;
    port.associate(&listener, LISTENER_KEY)
        .context("associating the listener")?;
    let accepted = Socket::new(Family::V4, Kind::Stream).context("the accept socket")?;
    let accept_ov: Overlapped = Overlapped::new();
    let started = listener
        .accept_ex(&accepted, &accept_ov, Vec::new())
        .context("AcceptEx")?;
    steps.step(format_args!(
        "listener on {addr} (key {LISTENER_KEY}); AcceptEx posted: {}",
        describe(started)
    ));
    let client = Socket::connect_tcp(addr).context("connecting")?;
    let packet = port
        .get(Some(STEP_TIMEOUT))
        .context("waiting for the accept")?;
    expect(&packet, LISTENER_KEY, "the accept")?;
    steps.step(format_args!(
        "accept packet: key {}, {} bytes; connection from {}",
        packet.key,
        packet.bytes,
        client.local_addr().context("the client's address")?
    ));
    port.associate(&accepted, CONNECTION_KEY)
        .context("associating the connection")?;
    let conn = Arc::new(Connection {
        sock: accepted,
        recv_ov: Overlapped::new(),
        send_ov: Overlapped::new(),
    });
    let (tx, rx) = mpsc::channel();
    let workers: Vec<_> = (1..=2)
        .map(|worker| {
            let (port, conn, tx) = (port.clone(), conn.clone(), tx.clone());
            thread::spawn(move || work(worker, &port, &conn, &tx))
        })
        .collect();
    drop(tx);
    steps.step("two worker threads wait on the port");
    let started = conn
        .sock
        .recv(&conn.recv_ov, vec![vec![0; 64]], 0)
        .context("posting the server's receive")?;
    steps.step(format_args!(
        "server receive posted (key {CONNECTION_KEY}): {}",
        describe(started)
    ));
    let send_ov: Overlapped = Overlapped::new();
    let _ = client
        .send(&send_ov, vec![MESSAGE.to_vec()], 0)
        .context("the client's send")?;
    finished(&send_ov, "the client's send")?;
    steps.step(format_args!("client sent {}", quoted(MESSAGE)));
    for _ in 0..2 {
        report(steps, &rx)?;
    }
    let echo_ov: Overlapped = Overlapped::new();
    let _ = client
        .recv(&echo_ov, vec![vec![0; 64]], 0)
        .context("the client's receive")?;
    let echo = finished(&echo_ov, "the client's receive")?;
    let bufs = echo_ov.take_buffers().context("the echo's buffer")?;
    let got = &bufs[0][..echo.bytes];
    if got != MESSAGE {
        return Err(Failure::new(format!("the echo was {}", quoted(got))));
    }
    steps.step(format_args!("client received the echo: {}", quoted(got)));
    port.post(7, POSTED_KEY, None).context("posting a packet")?;
    report(steps, &rx)?;
    port.close();
    for _ in 0..2 {
        report(steps, &rx)?;
    }
    for worker in workers {
        worker
            .join()
            .map_err(|_| Failure::new("a worker panicked"))??;
    }
    Ok(())
}

/// The server's side of the connection, shared by the workers.
struct Connection {
    sock: Socket,
    recv_ov: Overlapped,
    send_ov: Overlapped,
}

/// A worker: echoes what the connection receives, reports every packet, stops when the port
/// closes.
fn work(
    worker: usize,
    port: &CompletionPort,
    conn: &Connection,
    tx: &mpsc::Sender<Seen>,
) -> Outcome<()> {
    loop {
        let packet = match port.get(Some(STEP_TIMEOUT)) {
            Ok(packet) => packet,
            Err(e) if e.code() == codes::ERROR_ABANDONED_WAIT_0 => {
                let _ = tx.send(Seen::Closed { worker });
                return Ok(());
            }
            Err(e) => return Err(e).context(format_args!("worker {worker} waiting")),
        };
        packet.result().context("a packet's operation")?;
        let (key, bytes) = (packet.key, packet.bytes);
        let received = match (key, &packet.overlapped) {
            (CONNECTION_KEY, Some(ov)) if ov.same_as(&conn.recv_ov) => Some(ov.clone()),
            _ => None,
        };
        let what = match (key, &received) {
            (POSTED_KEY, _) => "posted by hand",
            (_, Some(_)) => "a receive: the worker echoes it",
            (_, None) => "the echo, sent",
        };
        let _ = tx.send(Seen::Packet {
            worker,
            key,
            bytes,
            what,
        });
        if let Some(ov) = received {
            let mut buf = ov.take_buffers().context("the received buffer")?.remove(0);
            buf.truncate(bytes);
            let _ = conn
                .sock
                .send(&conn.send_ov, vec![buf], 0)
                .context("the echo")?;
        }
    }
}

fn report(steps: &mut Steps, rx: &mpsc::Receiver<Seen>) -> Outcome<()> {
    match rx.recv_timeout(STEP_TIMEOUT) {
        Ok(Seen::Packet {
            worker,
            key,
            bytes,
            what,
        }) => steps.step(format_args!(
            "worker {worker} took a packet: key {key}, {bytes} bytes ({what})"
        )),
        Ok(Seen::Closed { worker }) => steps.step(format_args!(
            "port closed: worker {worker} woke with ERROR_ABANDONED_WAIT_0 ({})",
            codes::ERROR_ABANDONED_WAIT_0
        )),
        Err(_) => return Err(Failure::new("no packet came in time")),
    }
    Ok(())
}

fn expect(packet: &Packet, key: usize, what: &str) -> Outcome<()> {
    packet.result().context(what)?;
    if packet.key != key {
        return Err(Failure::new(format!(
            "{what}: key {} instead of {key}",
            packet.key
        )));
    }
    Ok(())
}

fn describe(started: Started) -> String {
    match started {
        Started::Done(n) => format!("completed at once, {n} bytes"),
        Started::Pending => "pending (WSA_IO_PENDING, 997)".into(),
    }
}
