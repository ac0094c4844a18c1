//! How a finished operation makes itself known: the three notification models of the chapter.
//!
//! The choice is made when the operation starts and never changes: a completion routine if one
//! was given, else the event of the overlapped object (if it has one).

use crate::alertable::RoutineTicket;
use crate::event::Event;
use crate::overlapped::Completion;

pub(crate) enum Notify {
    /// Signal the overlapped object's event, if it has one (S21).
    Event(Option<Event>),
    /// Queue the completion routine to the issuing thread (S27); the event is left alone (S22).
    Routine(RoutineTicket),
}

impl Notify {
    /// Delivers the notification; called exactly once per operation that did not fail at once.
    pub(crate) fn fire(&self, completion: Completion) {
        match self {
            Notify::Event(Some(event)) => event.set(),
            Notify::Event(None) => {}
            Notify::Routine(ticket) => ticket.queue(completion),
        }
    }
}
