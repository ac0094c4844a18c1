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

    /// Becomes `next`, keeping the port's reference when it is the same port and key.
    pub(crate) fn renew(&mut self, next: Notify) {
        match (&mut *self, next) {
            (
                Notify::Port {
                    sink,
                    key,
                    overlapped,
                },
                Notify::Port {
                    sink: next_sink,
                    key: next_key,
                    overlapped: next_overlapped,
                },
            ) if Arc::ptr_eq(sink, &next_sink) && *key == next_key => {
                *overlapped.get_mut().unwrap_or_else(|e| e.into_inner()) = next_overlapped
                    .into_inner()
                    .unwrap_or_else(|e| e.into_inner());
            }
            (_, next) => *self = next,
        }
    }

    /// Lets go of the overlapped object's handle and of a routine, keeping a port's reference for
    /// the next operation of the same socket.
    pub(crate) fn release(&mut self) {
        match self {
            Notify::Port { overlapped, .. } => {
                *overlapped.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
            }
            Notify::Event(None) => {}
            Notify::Event(Some(_)) | Notify::Routine(_) => *self = Notify::Event(None),
        }
    }

    /// Whether this notification goes to a completion port.
    pub(crate) fn is_port(&self) -> bool {
        matches!(self, Notify::Port { .. })
    }
}
