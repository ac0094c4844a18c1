//! Event objects and waiting on them: `WSACreateEvent`, `WSASetEvent`, `WSAResetEvent`,
//! `WSACloseEvent`, `WSAWaitForMultipleEvents`.

use std::borrow::Borrow;
use std::time::Duration;

use super::handles::wsa_set_last_error;
use super::{
    WsaEvent, WSA_INFINITE, WSA_MAXIMUM_WAIT_EVENTS, WSA_WAIT_EVENT_0, WSA_WAIT_FAILED,
    WSA_WAIT_IO_COMPLETION, WSA_WAIT_TIMEOUT,
};
use crate::error::codes;
use crate::{wait_for_events_ex, Event, WaitExResult, WaitFor};

/// `WSACreateEvent`: a manual-reset event, initially not signalled (S20).
pub fn wsa_create_event() -> WsaEvent {
    Event::new()
}

/// `WSASetEvent`: signals the event (S25: from any thread). Always `true`.
pub fn wsa_set_event(h_event: &WsaEvent) -> bool {
    h_event.set();
    true
}

/// `WSAResetEvent`: clears the event. Always `true`.
pub fn wsa_reset_event(h_event: &WsaEvent) -> bool {
    h_event.reset();
    true
}

/// `WSACloseEvent`: lets go of this handle. An overlapped object still holding the event keeps
/// it alive until it is dropped, so a pending operation can always signal it. Always `true`.
pub fn wsa_close_event(h_event: WsaEvent) -> bool {
    drop(h_event);
    true
}

/// `WSAWaitForMultipleEvents(cEvents, lphEvents, fWaitAll, dwTimeout, fAlertable)` (S23, S24).
///
/// Returns [`WSA_WAIT_EVENT_0`] + the index of the lowest signalled event (`wait_all` false), or
/// [`WSA_WAIT_EVENT_0`] once all are signalled at the same moment (`wait_all` true); a satisfied
/// auto-reset event is consumed, a manual-reset one stays signalled. [`WSA_WAIT_TIMEOUT`] when
/// `timeout_ms` passes first ([`WSA_INFINITE`]: never; 0: only polls). [`WSA_WAIT_FAILED`] with
/// the last error `WSA_INVALID_PARAMETER` for an empty list, a list longer than
/// [`WSA_MAXIMUM_WAIT_EVENTS`] (Windows' cap, kept here; the Rust API has none), or the same
/// event twice in a wait for all.
///
/// `events` may hold the events themselves (`&events[..n]`) or references to them (`&[&ev]`).
///
/// With `alertable`, queued completion routines of the calling thread run when no event is
/// signalled, and the wait returns [`WSA_WAIT_IO_COMPLETION`] (S28).
pub fn wsa_wait_for_multiple_events<E: Borrow<WsaEvent>>(
    events: &[E],
    wait_all: bool,
    timeout_ms: u32,
    alertable: bool,
) -> u32 {
    if events.is_empty() || events.len() > WSA_MAXIMUM_WAIT_EVENTS {
        wsa_set_last_error(codes::WSA_INVALID_PARAMETER);
        return WSA_WAIT_FAILED;
    }
    let refs: Vec<&Event> = events.iter().map(Borrow::borrow).collect();
    let wait_for = if wait_all { WaitFor::All } else { WaitFor::Any };
    let timeout = match timeout_ms {
        WSA_INFINITE => None,
        ms => Some(Duration::from_millis(u64::from(ms))),
    };
    match wait_for_events_ex(&refs, wait_for, timeout, alertable) {
        // The index is below 64, so it fits.
        Ok(WaitExResult::Signalled(i)) => WSA_WAIT_EVENT_0 + i as u32,
        Ok(WaitExResult::Timeout) => WSA_WAIT_TIMEOUT,
        Ok(WaitExResult::IoCompletion) => WSA_WAIT_IO_COMPLETION,
        Err(e) => {
            wsa_set_last_error(e.code());
            WSA_WAIT_FAILED
        }
    }
}
