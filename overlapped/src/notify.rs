//! How a finished operation makes itself known: the three notification models of the chapter.
//!
//! The choice is made when the operation starts and never changes: a completion routine if one
//! was given, else the port the socket is associated with, else the event of the overlapped
//! object (if it has one).

use std::sync::Arc;

use crate::alertable::RoutineTicket;
use crate::event::Event;
use crate::overlapped::{AnyOverlapped, Completion};
use crate::port::{PortBinding, PortSink};

pub(crate) enum Notify {
    /// Signal the overlapped object's event, if it has one (S21).
    Event(Option<Event>),
    /// Queue the completion routine to the issuing thread (S27); the event is left alone (S22).
    Routine(RoutineTicket),
    /// Queue a packet on the socket's completion port (S36), handing it the overlapped object.
    Port { sink: Arc<dyn PortSink>, key: usize },
}

/// The notification an operation starts with, described by what it borrows, so that a renewed
/// record ([`Notify::renew`]) clones nothing it already holds.
pub(crate) enum NotifyWith<'a> {
    Event(Option<&'a Event>),
    Routine(RoutineTicket),
    Port(&'a PortBinding),
}

impl Notify {
    pub(crate) fn new(with: NotifyWith<'_>) -> Notify {
        match with {
            NotifyWith::Event(event) => Notify::Event(event.cloned()),
            NotifyWith::Routine(ticket) => Notify::Routine(ticket),
            NotifyWith::Port(binding) => Notify::Port {
                sink: binding.sink.clone(),
                key: binding.key,
            },
        }
    }

    /// Becomes the notification `with` describes, keeping the port's reference when it is the
    /// same port and key.
    pub(crate) fn renew(&mut self, with: NotifyWith<'_>) {
        if let (Notify::Port { sink, key }, NotifyWith::Port(binding)) = (&*self, &with) {
            if Arc::ptr_eq(sink, &binding.sink) && *key == binding.key {
                return;
            }
        }
        *self = Notify::new(with);
    }

    /// Delivers the notification; called exactly once per operation that did not fail at once.
    /// `handle` is the overlapped object's handle that a port's packet carries.
    pub(crate) fn fire(&self, completion: Completion, handle: Option<AnyOverlapped>) {
        match self {
            Notify::Event(Some(event)) => event.set(),
            Notify::Event(None) => {}
            Notify::Routine(ticket) => ticket.queue(completion),
            Notify::Port { sink, key } => sink.post_completion(*key, completion, handle),
        }
    }

    /// Lets go of a routine and an event, keeping a port's reference for the next operation of
    /// the same socket.
    pub(crate) fn release(&mut self) {
        match self {
            Notify::Port { .. } | Notify::Event(None) => {}
            Notify::Event(Some(_)) | Notify::Routine(_) => *self = Notify::Event(None),
        }
    }

    /// Whether this notification goes to a completion port.
    pub(crate) fn is_port(&self) -> bool {
        matches!(self, Notify::Port { .. })
    }
}
