//! Windows' Overlapped IO model for sockets, and I/O completion ports, on Linux.
//!
//! An overlapped operation (send, receive, send-to, receive-from, and the extension functions
//! accept, connect, disconnect and transmit-file) returns at once: either it is done, with a byte
//! count, or it is pending ([`Started`]). Each outstanding operation has its own [`Overlapped`]
//! object, which owns the operation's buffers — a scatter/gather list of owned buffers
//! ([`IoBuf`]; [`Prefix`] cuts one to the bytes a receive brought, for an echo) — until the
//! kernel is done with them, then hands them back with the [`Completion`]. A receive may also
//! leave the choice of buffer until its data arrives ([`Socket::recv_pooled`] from a port's
//! [`BufferPool`]), so that a waiting receive holds none, and a socket whose receives are all
//! pooled can receive ahead into the pool ([`Socket::receive_ahead`]: one receive kept in the
//! kernel while data comes). A program learns that an operation finished in one of three ways:
//! - through the [`Event`] of its overlapped object: wait on one or many with
//!   [`wait_for_events`], or on thousands kept in an [`EventSet`], whose waits cost what is
//!   signalled; or ask the object, waiting or not ([`Overlapped::completion`]);
//! - through a completion routine ([`Socket::recv_with_routine`] and siblings), run on the
//!   issuing thread only in its alertable waits ([`sleep_ex`], [`wait_for_events_ex`]);
//! - through a [`CompletionPort`] that the socket is associated with, drained by worker threads.
//!
//! ```no_run
//! use overlapped::{Event, Overlapped, Socket, Started};
//!
//! # fn main() -> overlapped::Result<()> {
//! let sock = Socket::connect_tcp("127.0.0.1:9190".parse().unwrap())?;
//! let ov = Overlapped::with_event(Event::new());
//! match sock.send(&ov, vec![b"Network is Computer!".to_vec()], 0)? {
//!     Started::Done(n) => println!("sent {n} bytes at once"),
//!     Started::Pending => println!("pending"),
//! }
//! ov.event().unwrap().wait(None);
//! let sent = ov.result(false)?;
//! let bufs = ov.take_buffers()?; // the buffers come back
//! # let _ = (sent, bufs);
//! # Ok(())
//! # }
//! ```
//!
//! The numbered promises of the model (S1…S48) are written in the project's SPEC; the code and
//! the tests cite them.
//!
//! # Design
//! Operations run on io_uring, or on epoll readiness where io_uring is missing or forbidden, with
//! the same behaviour ([`driver`]; [`backend_info`] says which and why). Which ring an operation
//! goes to follows from how it notifies: event-model operations go to a shared ring that a
//! background thread reaps, so an event is signalled even while no thread of the program is inside
//! the library; a thread's routine operations go to that thread's own ring, which it reaps in its
//! alertable waits; a port's operations go to the port's ring, which the waiting workers reap
//! themselves, taking turns. One place (`engine.rs`) records each
//! result in the overlapped object and fires exactly one notification.
//!
//! Buffers belong to the operation until its last kernel completion (S15): dropping the
//! overlapped object, the socket or the issuing thread cancels the operation, and the buffers are
//! freed only when the kernel has let go.
//!
//! The [`winsock`] module keeps Win32's names, return values and numeric codes, so that a Winsock
//! program ports line by line.
//!
//! Requires Linux 5.11 or later for the io_uring backend (timed waits); the epoll backend runs on
//! any Linux.

#![deny(missing_docs, unsafe_op_in_unsafe_fn)]

mod addr;
mod ahead;
mod alertable;
mod buf;
pub mod driver;
mod engine;
mod error;
mod event;
mod event_set;
mod ext;
pub mod flags;
mod notify;
mod op;
mod overlapped;
mod pool;
mod port;
mod prefix;
mod socket;
mod spare;
mod thread_token;
mod transfer;
pub mod winsock;

pub use alertable::{sleep_ex, wait_for_events_ex, NotStarted};
pub use buf::{IoBuf, IoBufMut, MAX_BUFFERS};
pub use driver::{backend_info, stats, BackendInfo, BackendKind, Stats};
pub use error::{code_for_errno, code_name, codes, Error, Result};
pub use event::{wait_for_events, Event, WaitExResult, WaitFor, WaitResult};
pub use event_set::EventSet;
pub use overlapped::{Completion, Overlapped, Started};
pub use pool::{BufferPool, PooledBuf, MAX_POOL_BUFFERS};
pub use port::{CompletionPort, Packet, PortWait};
pub use prefix::Prefix;
pub use socket::{Family, Kind, Socket};
pub use transfer::CompletionRoutine;
