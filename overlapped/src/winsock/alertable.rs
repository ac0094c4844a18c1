//! Alertable waits with Win32's return codes: `SleepEx` and `WaitForSingleObjectEx`.
//!
//! A completion routine runs only while the thread that started its operation is in an alertable
//! wait (S27); these are two of those waits ([`wsa_wait_for_multiple_events`] with `alertable`
//! is the third). Each is the Rust API's wait ([`crate::sleep_ex`], [`Event::wait_ex`]) with its
//! result turned into the `DWORD` a Win32 program compares: [`WAIT_IO_COMPLETION`] when routines
//! ran (S28), [`WAIT_OBJECT_0`], [`WAIT_TIMEOUT`], or 0 for a sleep that lasted its time.
//!
//! [`wsa_wait_for_multiple_events`]: super::wsa_wait_for_multiple_events

use std::time::Duration;

use super::handles::wsa_set_last_error;
use super::{WsaEvent, INFINITE, WAIT_FAILED, WAIT_IO_COMPLETION, WAIT_OBJECT_0, WAIT_TIMEOUT};
use crate::{Event, WaitExResult};

/// A timeout in milliseconds as the Rust API takes it: [`INFINITE`] is none.
fn timeout(ms: u32) -> Option<Duration> {
    match ms {
        INFINITE => None,
        ms => Some(Duration::from_millis(u64::from(ms))),
    }
}

/// `SleepEx(dwMilliseconds, bAlertable)`: sleeps `ms` milliseconds ([`INFINITE`]: forever).
///
/// With `alertable`, the sleep ends as soon as completion routines of the calling thread are
/// queued: it runs every one of them, in the order their operations finished, and returns
/// [`WAIT_IO_COMPLETION`] (S28). Otherwise, and when the time runs out first, it returns 0. A
/// sleep that is not alertable never runs routines (S29); `sleep_ex(0, true)` only runs those
/// already queued. Inside a routine, an alertable sleep runs no routine (they never nest, S29).
pub fn sleep_ex(ms: u32, alertable: bool) -> u32 {
    match crate::sleep_ex(timeout(ms), alertable) {
        Ok(WaitExResult::IoCompletion) => WAIT_IO_COMPLETION,
        Ok(WaitExResult::Timeout | WaitExResult::Signalled(_)) => 0,
        // The thread's routine queue could not be set up; then no routine can ever have been
        // queued to this thread (starting one fails the same way), so a plain sleep is exact.
        Err(_) => {
            if let Some(t) = timeout(ms) {
                std::thread::sleep(t);
                return 0;
            }
            loop {
                std::thread::park();
            }
        }
    }
}

/// `WaitForSingleObjectEx(hHandle, dwMilliseconds, bAlertable)` on an event.
///
/// Returns [`WAIT_OBJECT_0`] when the event is signalled (an auto-reset event is consumed, a
/// manual-reset one stays signalled), [`WAIT_TIMEOUT`] when `ms` milliseconds pass first
/// ([`INFINITE`]: never; 0: only looks), or [`WAIT_FAILED`] with the last error set. With
/// `alertable`, queued completion routines of the calling thread run when the event is not
/// signalled, and the wait returns [`WAIT_IO_COMPLETION`] even though the event is not set
/// (S28); a signalled event wins over queued routines, which then wait for the next alertable
/// wait. Without `alertable`, no routine runs (S29).
pub fn wait_for_single_object_ex(event: &WsaEvent, ms: u32, alertable: bool) -> u32 {
    match Event::wait_ex(event, timeout(ms), alertable) {
        Ok(WaitExResult::Signalled(_)) => WAIT_OBJECT_0,
        Ok(WaitExResult::Timeout) => WAIT_TIMEOUT,
        Ok(WaitExResult::IoCompletion) => WAIT_IO_COMPLETION,
        Err(e) => {
            wsa_set_last_error(e.code());
            WAIT_FAILED
        }
    }
}
