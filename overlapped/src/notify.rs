//! How a finished operation makes itself known: the three notification models of the chapter.
//!
//! The choice is made when the operation starts and never changes: a completion routine if one
//! was given, else the port the socket is associated with, else the event of the overlapped
//! object (if it has one).

use std::sync::{Arc, Mutex};

use crate::alertable::RoutineTicket;
use crate::event::{lock, Event};
use crate::overlapped::{AnyOverlapped, Completion};
use crate::port::PortSink;

pub(crate) enum Notify {
    /// Signal the overlapped object's event, if it has one (S21).
    Event(Option<Event>),
    /// Queue the completion routine to the issuing thread (S27); the event is left alone (S22).
    Routine(RoutineTicket),
    /// Queue a packet on the socket's completion port (S36), handing it the overlapped object.
    Port {
        sink: Arc<dyn PortSink>,
        key: usize,
        overlapped: Mutex<Option<AnyOverlapped>>,
    },
}

impl Notify {
    /// Delivers the notification; called exactly once per operation that did not fail at once.
    pub(crate) fn fire(&self, completion: Completion) {
        match self {
            Notify::Event(Some(event)) => event.set(),
            Notify::Event(None) => {}
            Notify::Routine(ticket) => ticket.queue(completion),
            Notify::Port {
                sink,
                key,
                overlapped,
            } => sink.post_completion(*key, completion, lock(overlapped).take()),
        }
    }

    /// Whether this notification goes to a completion port.
    pub(crate) fn is_port(&self) -> bool {
        matches!(self, Notify::Port { .. })
    }
}
