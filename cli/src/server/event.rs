//! The event model: one thread serves every connection by waiting on their events.
//!
//! This is the chapter's pattern. Each connection has one event and one overlapped object, and
//! exactly one operation outstanding at any time: a receive, or the send that echoes what the
//! receive brought. So the connection's single buffer moves receive → send → receive, the event
//! says "the outstanding operation finished", and the overlapped object says which result it had.
//!
//! The serving thread keeps the accept event (see [`super::accept`]) and every connection's event
//! in one [`EventSet`], which has no 64-event cap and whose waits cost what is signalled, not how
//! many connections are open. Each wake returns *every* signalled index ([`EventSet::ready`]), so
//! the thread serves exactly the connections whose operations finished, all of them: a connection
//! that is always busy cannot starve the others, and idle connections cost nothing. A connection's
//! index in the set is also its slot in the thread's table of connections. Serving does one step
//! per connection (collect the result, start the next operation) and never blocks.
//!
//! Whether an operation completes at once or is pending, its event is signalled when it is done
//! (S3), so both cases take the same path: the next wait returns at once and the step is served.
//! Before reading a result the thread resets the event, then asks the overlapped object without
//! waiting; the engine records a result before it signals, so a result that is not there yet will
//! set the event again.
//!
//! A connection ends on a graceful close (a receive of 0 bytes, S10), a reset (S11), or any
//! failed operation; it leaves the set and the table, and the server carries on.

use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, TryRecvError};

use overlapped::{codes, Error, Event, EventSet, Overlapped, Prefix, Socket};

use super::accept::{self, Incoming};
use crate::failure::{Failure, Outcome};

/// The size of each connection's receive buffer.
const BUF_SIZE: usize = 4096;
/// A connection's buffer: the whole of it receives, the bytes that came are echoed from it.
type Buf = Prefix<Vec<u8>>;

/// Serves connections accepted on `listener` until a fatal error.
pub fn serve(listener: Socket, verbose: bool) -> Outcome<()> {
    let accept_event = Event::new();
    let incoming = accept::spawn(listener, accept_event.clone())?;
    let set = EventSet::new();
    let accept_index = set.add(&accept_event);
    // conns[i] is the connection whose event has index i in the set.
    let mut conns: Vec<Option<Conn>> = Vec::new();
    loop {
        let mut accepting = false;
        for i in set.ready(None) {
            if i == accept_index {
                accepting = true;
                continue;
            }
            let Some(conn) = conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if let Some(end) = conn.serve() {
                report(conn.peer, &end, verbose);
                set.remove_index(i);
                conns[i] = None;
            }
        }
        if accepting {
            accept_event.reset();
            take_new(&incoming, &set, &mut conns, verbose)?;
        }
    }
}

/// Opens every connection the accepting thread has handed over, each in the slot of its event's
/// index in `set`.
fn take_new(
    incoming: &Receiver<Incoming>,
    set: &EventSet,
    conns: &mut Vec<Option<Conn>>,
    verbose: bool,
) -> Outcome<()> {
    loop {
        match incoming.try_recv() {
            Ok(Ok((sock, peer))) => match Conn::open(sock, peer) {
                Ok(conn) => {
                    let i = set.add(&conn.event);
                    if conns.len() <= i {
                        conns.resize_with(i + 1, || None);
                    }
                    conns[i] = Some(conn);
                    if verbose {
                        // The accept event is the one member that is not a connection.
                        println!("{peer}: connected ({} open)", set.len() - 1);
                    }
                }
                Err(end) => report(peer, &end, verbose),
            },
            Ok(Err(failure)) => return Err(failure),
            Err(TryRecvError::Empty) => return Ok(()),
            Err(TryRecvError::Disconnected) => {
                return Err(Failure::new("the accepting thread stopped"))
            }
        }
    }
}

/// Why a connection ended.
enum End {
    /// The peer closed its side; everything it sent was echoed.
    Closed,
    /// An operation failed (reset, abort, ...).
    Failed(&'static str, Error),
    /// A send completed with fewer bytes than it was given (S8 forbids this).
    ShortSend { sent: usize, expected: usize },
}

fn report(peer: SocketAddr, end: &End, verbose: bool) {
    match end {
        End::Closed if verbose => println!("{peer}: closed by the peer"),
        End::Failed(_, e) if verbose && is_ordinary(e) => println!("{peer}: {e}"),
        End::Closed => {}
        End::Failed(_, e) if is_ordinary(e) => {}
        End::Failed(what, e) => eprintln!("overlapped: {peer}: {what} failed: {e}"),
        End::ShortSend { sent, expected } => {
            eprintln!("overlapped: {peer}: a send completed with {sent} of {expected} bytes")
        }
    }
}

/// Whether an error is a normal way for a client to leave.
fn is_ordinary(e: &Error) -> bool {
    matches!(
        e.code(),
        codes::WSAECONNRESET | codes::WSAECONNABORTED | codes::WSAESHUTDOWN
    )
}

/// The operation a connection has outstanding.
#[derive(Clone, Copy)]
enum Stage {
    Receiving,
    Sending { len: usize },
}

/// One client: its socket, its event, and the overlapped object of its one outstanding operation.
struct Conn {
    sock: Socket,
    peer: SocketAddr,
    event: Event,
    ov: Overlapped<Buf>,
    stage: Stage,
}

impl Conn {
    /// Takes a new connection and posts its first receive; `Err` if the connection is already
    /// over (a client may reset it before it was accepted).
    fn open(sock: Socket, peer: SocketAddr) -> Result<Conn, End> {
        sock.set_nodelay(true)
            .map_err(|e| End::Failed("setting TCP_NODELAY", e))?;
        let event = Event::new();
        let mut conn = Conn {
            sock,
            peer,
            ov: Overlapped::with_event(event.clone()),
            event,
            stage: Stage::Receiving,
        };
        match conn.receive(vec![Prefix::new(vec![0; BUF_SIZE])]) {
            None => Ok(conn),
            Some(end) => Err(end),
        }
    }

    /// Serves the finished operation, if it has finished: a receive's data is echoed, a
    /// finished send is followed by the next receive. `Some` when the connection is over.
    fn serve(&mut self) -> Option<End> {
        self.event.reset();
        let completion = match self.ov.completion(false) {
            Ok(c) => c,
            // Not finished after all: its completion will set the event again.
            Err(e) if e.code() == codes::WSA_IO_INCOMPLETE => return None,
            Err(e) => return Some(End::Failed("reading a result", e)),
        };
        // The list and its one buffer go from operation to operation: the buffer is cut to the
        // bytes a receive brought for their echo, and made whole again for the next receive.
        let mut bufs = match self.ov.take_buffers() {
            Ok(bufs) => bufs,
            Err(e) => return Some(End::Failed("taking back the buffer", e)),
        };
        match (self.stage, completion.result()) {
            (Stage::Receiving, Err(e)) => Some(End::Failed("a receive", e)),
            (Stage::Sending { .. }, Err(e)) => Some(End::Failed("a send", e)),
            (Stage::Receiving, Ok(0)) => Some(End::Closed),
            (Stage::Receiving, Ok(n)) => {
                if let Some(buf) = bufs.last_mut() {
                    buf.set_len(n);
                }
                self.send(bufs, n)
            }
            (Stage::Sending { len }, Ok(sent)) if sent != len => Some(End::ShortSend {
                sent,
                expected: len,
            }),
            (Stage::Sending { .. }, Ok(_)) => {
                bufs.iter_mut().for_each(Prefix::reset);
                self.receive(bufs)
            }
        }
    }

    /// Posts a receive into `bufs`. Done at once or pending, its event will be signalled.
    fn receive(&mut self, bufs: Vec<Buf>) -> Option<End> {
        self.stage = Stage::Receiving;
        match self.sock.recv(&self.ov, bufs, 0) {
            Ok(_started) => None,
            Err(e) => Some(End::Failed("posting a receive", e)),
        }
    }

    /// Echoes the `len` bytes `bufs` hold. Done at once or pending, its event will be signalled.
    fn send(&mut self, bufs: Vec<Buf>, len: usize) -> Option<End> {
        self.stage = Stage::Sending { len };
        match self.sock.send(&self.ov, bufs, 0) {
            Ok(_started) => None,
            Err(e) => Some(End::Failed("an echo send", e)),
        }
    }
}
