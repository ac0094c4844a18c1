//! Accepting connections for a server whose serving thread sleeps in a wait on events.
//!
//! The event model's thread can wait only on events, and a listening socket has none: Windows
//! programs of the chapter either poll `accept` or give accepting its own thread. We do the
//! latter. A helper thread blocks in `accept`, sends each new socket down a channel and then sets
//! the *accept event*, which the serving thread keeps in its wait list. The serving thread resets
//! the event *before* draining the channel, so a socket sent after the drain always leaves the
//! event set for the next wait: no connection is ever left in the channel unnoticed.
//!
//! Transient failures (out of descriptors, a connection aborted before it was accepted) are
//! reported and retried after a short pause; failures that mean the listener itself is unusable
//! end the thread and are handed to the serving thread as the last message.

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

use overlapped::{codes, Event, Socket};

use crate::failure::{Context, Failure, Outcome};

/// What the accepting thread hands over: a new connection and its peer, or why it stopped.
pub type Incoming = Outcome<(Socket, SocketAddr)>;

/// Pause after a transient accept failure, so that running out of descriptors does not spin.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Starts the accepting thread; it sets `ready` after each message it sends.
pub fn spawn(listener: Socket, ready: Event) -> Outcome<Receiver<Incoming>> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("accept".into())
        .spawn(move || loop {
            let message = match listener.accept() {
                Ok(accepted) => Ok(accepted),
                Err(e) if is_fatal(e.code()) => Err(Failure::new(format!("accepting: {e}"))),
                Err(e) => {
                    eprintln!("overlapped: accept failed, retrying: {e}");
                    thread::sleep(RETRY_PAUSE);
                    continue;
                }
            };
            let stop = message.is_err();
            if tx.send(message).is_err() {
                return; // The serving thread is gone.
            }
            ready.set();
            if stop {
                return;
            }
        })
        .context("starting the accepting thread")?;
    Ok(rx)
}

/// Whether an accept error means the listener cannot accept any more.
fn is_fatal(code: u32) -> bool {
    matches!(
        code,
        codes::WSAEBADF
            | codes::WSAENOTSOCK
            | codes::WSAEINVAL
            | codes::WSAEOPNOTSUPP
            | codes::WSAEFAULT
    )
}
