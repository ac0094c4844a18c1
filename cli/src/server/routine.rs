//! The completion-routine model: one thread serves every connection from inside its alertable
//! waits.
//!
//! This is the chapter's second pattern (its `CmplRouEchoServ`). Each connection is a chain of
//! completion routines: the receive's routine starts the send that echoes what arrived, the
//! send's routine starts the next receive. The serving thread issues every operation, so every
//! routine is queued to it (S27) and runs while it sits in [`Event::wait_ex`] with `alertable`
//! set; a wait that ran routines returns [`WaitExResult::IoCompletion`] and the thread simply
//! waits again. The thread never looks at a connection between its operations: there is no list
//! to scan, no event per connection, and nothing like the 64-event cap of the event model. A
//! connection's state lives only in its routines: the socket (shared by the two routines of the
//! chain) and the overlapped object with its one buffer, which each routine gets back and hands
//! to the next operation (S26). When a chain ends, the last reference to its socket goes with it
//! and the socket closes.
//!
//! The one thing a routine cannot do is accept: a listening socket has no routine to run. As in
//! the event model, a helper thread blocks in `accept` and hands sockets over through a channel
//! and the *accept event* ([`super::accept`]); the serving thread waits alertably on that event,
//! so new clients and finished operations both wake it, and nothing is polled. A signalled
//! event wins over queued routines (S28); those run in the next wait, which returns at once.
//!
//! An operation done at once still queues its routine (S30), so the chain never recurses: each
//! step runs in a wait of its own. An operation that fails at once queues nothing (S4); the
//! chain ends there, and dropping the connection is all the cleanup it needs.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc::{Receiver, TryRecvError};

use overlapped::{codes, Error, Event, NotStarted, Overlapped, Prefix, Socket, WaitExResult};

use super::accept::{self, Incoming};
use crate::failure::{Context, Failure, Outcome};

/// The size of each connection's buffer.
const BUF_SIZE: usize = 4096;
/// A connection's buffer: the whole of it receives, the bytes that came are echoed from it.
type Buf = Prefix<Vec<u8>>;

/// Serves connections accepted on `listener` until a fatal error.
pub fn serve(listener: Socket, verbose: bool) -> Outcome<()> {
    let accept_event = Event::new();
    let incoming = accept::spawn(listener, accept_event.clone())?;
    let open = Rc::new(Cell::new(0usize));
    loop {
        match accept_event
            .wait_ex(None, true)
            .context("waiting alertably for clients and completions")?
        {
            // Routines ran: echoes were sent, receives posted, connections ended.
            WaitExResult::IoCompletion | WaitExResult::Timeout => {}
            WaitExResult::Signalled(_) => {
                // Reset before draining: a socket sent after the drain sets the event again.
                accept_event.reset();
                take_new(&incoming, &open, verbose)?;
            }
        }
    }
}

/// Starts the chain of every connection the accepting thread has handed over.
fn take_new(incoming: &Receiver<Incoming>, open: &Rc<Cell<usize>>, verbose: bool) -> Outcome<()> {
    loop {
        match incoming.try_recv() {
            Ok(Ok((sock, peer))) => {
                let conn = Rc::new(Conn {
                    sock,
                    peer,
                    open: open.clone(),
                    verbose,
                });
                if let Err(e) = conn.sock.set_nodelay(true) {
                    conn.end(End::Failed("setting TCP_NODELAY", e));
                    continue;
                }
                open.set(open.get() + 1);
                if verbose {
                    println!("{peer}: connected ({} open)", open.get());
                }
                receive(
                    conn,
                    Overlapped::new(),
                    vec![Prefix::new(vec![0; BUF_SIZE])],
                );
            }
            Ok(Err(failure)) => return Err(failure),
            Err(TryRecvError::Empty) => return Ok(()),
            Err(TryRecvError::Disconnected) => {
                return Err(Failure::new("the accepting thread stopped"))
            }
        }
    }
}

/// One client, shared by the routines of its chain; the socket closes with the last of them.
struct Conn {
    sock: Socket,
    peer: SocketAddr,
    /// How many connections are open, for the verbose report.
    open: Rc<Cell<usize>>,
    verbose: bool,
}

/// Why a connection ended.
enum End {
    /// The peer closed its side; everything it sent was echoed.
    Closed,
    /// An operation failed (reset, abort, ...), at once or in its routine.
    Failed(&'static str, Error),
    /// A send completed with fewer bytes than it was given (S8 forbids this).
    ShortSend { sent: usize, expected: usize },
}

impl Conn {
    /// Ends the chain: reports why (ordinary endings only with `--verbose`). Counted only for
    /// connections that were opened, that is, whose chain started.
    fn end(&self, end: End) {
        let peer = self.peer;
        match &end {
            End::Closed if self.verbose => println!("{peer}: closed by the peer"),
            End::Failed(_, e) if self.verbose && is_ordinary(e) => println!("{peer}: {e}"),
            End::Closed => {}
            End::Failed(_, e) if is_ordinary(e) => {}
            End::Failed(what, e) => eprintln!("overlapped: {peer}: {what} failed: {e}"),
            End::ShortSend { sent, expected } => {
                eprintln!("overlapped: {peer}: a send completed with {sent} of {expected} bytes")
            }
        }
    }

    /// Ends a chain that had started (the connection was counted open).
    fn close(&self, end: End) {
        self.open.set(self.open.get().saturating_sub(1));
        self.end(end);
    }
}

/// Whether an error is a normal way for a client to leave.
fn is_ordinary(e: &Error) -> bool {
    matches!(
        e.code(),
        codes::WSAECONNRESET | codes::WSAECONNABORTED | codes::WSAESHUTDOWN
    )
}

/// Posts a receive into `bufs` (the connection's one buffer); its routine echoes what arrives.
fn receive(conn: Rc<Conn>, ov: Overlapped<Buf>, bufs: Vec<Buf>) {
    let chain = conn.clone();
    let started = conn.sock.recv_with_routine(
        ov,
        bufs,
        0,
        move |error: Option<Error>, bytes, ov: Overlapped<Buf>, _flags| {
            received(chain, error, bytes, ov)
        },
    );
    if let Err(NotStarted { error, .. }) = started {
        conn.close(End::Failed("posting a receive", error));
    }
}

/// The receive's routine: a closed or failed connection ends; data is echoed.
fn received(conn: Rc<Conn>, error: Option<Error>, bytes: usize, ov: Overlapped<Buf>) {
    if let Some(e) = error {
        return conn.close(End::Failed("a receive", e));
    }
    if bytes == 0 {
        return conn.close(End::Closed); // S10: the peer closed gracefully.
    }
    // The list and its buffer go on to the echo, the buffer cut to the bytes that came.
    let mut bufs = match ov.take_buffers() {
        Ok(bufs) => bufs,
        Err(e) => return conn.close(End::Failed("taking back the buffer", e)),
    };
    if let Some(buf) = bufs.last_mut() {
        buf.set_len(bytes);
    }
    let chain = conn.clone();
    let started = conn.sock.send_with_routine(
        ov,
        bufs,
        0,
        move |error: Option<Error>, sent, ov: Overlapped<Buf>, _flags| {
            echoed(chain, error, sent, bytes, ov)
        },
    );
    if let Err(NotStarted { error, .. }) = started {
        conn.close(End::Failed("an echo send", error));
    }
}

/// The send's routine: once all `expected` bytes are echoed, the next receive is posted with the
/// same object, list and buffer, made whole again.
fn echoed(conn: Rc<Conn>, error: Option<Error>, sent: usize, expected: usize, ov: Overlapped<Buf>) {
    if let Some(e) = error {
        return conn.close(End::Failed("an echo send", e));
    }
    if sent != expected {
        return conn.close(End::ShortSend { sent, expected });
    }
    let mut bufs = match ov.take_buffers() {
        Ok(bufs) => bufs,
        Err(e) => return conn.close(End::Failed("taking back the buffer", e)),
    };
    bufs.iter_mut().for_each(Prefix::reset);
    receive(conn, ov, bufs);
}
