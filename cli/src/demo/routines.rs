//! The completion-routine scenario: the chapter's `CmplRoutinesRecv` on one machine.
//!
//! The receiver posts an overlapped receive with a completion routine before any data exists:
//! pending. The sender sends the message. A wait that is *not* alertable then ends by timing out
//! without running the routine (S29): the routine belongs to the thread's alertable waits only.
//! An alertable sleep runs it and returns `WAIT_IO_COMPLETION` early (S28), and the routine
//! reports the thread it ran on, the thread that posted the receive (S27). The routine gets the
//! overlapped object back with the buffer in it (S26), and the object's event is never touched
//! (S22). Last, a receive posted when data is already waiting may complete at once, and its
//! routine is queued all the same (S30).

use std::cell::RefCell;
use std::rc::Rc;
use std::thread::{self, ThreadId};
use std::time::Duration;

use overlapped::{sleep_ex, Error, Event, Overlapped, Socket, Started, WaitExResult};

use super::{check, finished, loopback_pair, quoted, Steps, STEP_TIMEOUT};
use crate::failure::{Context, Failure, Outcome};

/// The chapter's message.
const MESSAGE: &[u8] = b"Network is Computer!";

/// How long the non-alertable wait lasts: long enough for the data to be there, and it must
/// time out, since nothing signals the event it waits on.
const NON_ALERTABLE_WAIT: Duration = Duration::from_millis(100);

/// What a routine was called with, and where.
struct Call {
    error: Option<Error>,
    bytes: usize,
    flags: u32,
    data: Vec<u8>,
    thread: ThreadId,
}

/// Where a routine leaves its call for the scenario to read.
type Slot = Rc<RefCell<Option<Call>>>;

/// Runs the scenario, printing each step.
pub fn run(steps: &mut Steps) -> Outcome<()> {
    let (_listener, client, server) = loopback_pair(steps)?;
    let issuer = thread::current().id();
    let event = Event::new();
    let slot = Slot::default();

    let started = post_receive(&server, Overlapped::with_event(event.clone()), &slot)?;
    check(started == Started::Pending, || {
        format!("a receive posted before any data was sent returned {started:?}, not pending")
    })?;
    steps.step(
        "receive posted with a completion routine, before any data: pending (WSA_IO_PENDING, 997)",
    );

    let send_ov = Overlapped::new();
    let _started = client
        .send(&send_ov, vec![MESSAGE.to_vec()], 0)
        .context("sending the message")?;
    let sent = finished(&send_ov, "the send")?;
    steps.step(format_args!(
        "send of {} from the client: {} bytes",
        quoted(MESSAGE),
        sent.bytes
    ));

    let waited = event
        .wait_ex(Some(NON_ALERTABLE_WAIT), false)
        .context("waiting, not alertable")?;
    check(waited == WaitExResult::Timeout, || {
        format!("a non-alertable wait on an event nothing signals returned {waited:?}")
    })?;
    check(slot.borrow().is_none(), || {
        "the routine ran in a wait that is not alertable (S29)".into()
    })?;
    steps.step(format_args!(
        "non-alertable wait (WaitForSingleObjectEx(.., FALSE)) for {} ms: WAIT_TIMEOUT, routine not run",
        NON_ALERTABLE_WAIT.as_millis()
    ));

    let slept = sleep_ex(Some(STEP_TIMEOUT), true).context("sleeping alertably")?;
    check(slept == WaitExResult::IoCompletion, || {
        format!("the alertable sleep ended with {slept:?}, not WAIT_IO_COMPLETION")
    })?;
    let call = take_call(&slot, "the receive")?;
    steps.step("alertable sleep (SleepEx(.., TRUE)): the routine ran inside it, then the sleep returned WAIT_IO_COMPLETION (0xC0)");
    check(call.data == MESSAGE, || {
        format!(
            "the routine received {}, not the message",
            quoted(&call.data)
        )
    })?;
    steps.more(format_args!(
        "routine called with error 0, {} bytes, flags {:#x}, the overlapped object holding {}",
        call.bytes,
        call.flags,
        quoted(&call.data)
    ));
    check(call.thread == issuer, || {
        format!(
            "the routine ran on {:?}, not on the issuing thread {issuer:?} (S27)",
            call.thread
        )
    })?;
    steps.more(format_args!(
        "routine ran on the issuing thread: {:?} = {issuer:?}",
        call.thread
    ));
    check(!event.is_set(), || {
        "the overlapped object's event was signalled though a routine was given (S22)".into()
    })?;
    steps.more("the overlapped object's event was left alone (S22)");

    done_at_once(steps, &client, &server, &slot)
}

/// S30: a receive whose data is already waiting may complete at once; its routine is still
/// queued, and runs in the next alertable wait.
fn done_at_once(steps: &mut Steps, client: &Socket, server: &Socket, slot: &Slot) -> Outcome<()> {
    let send_ov = Overlapped::new();
    let _started = client
        .send(&send_ov, vec![b"again".to_vec()], 0)
        .context("sending again")?;
    finished(&send_ov, "the second send")?;
    let started = post_receive(server, Overlapped::new(), slot)?;
    match started {
        Started::Done(n) => steps.step(format_args!(
            "receive with a routine, data already waiting: completed at once, {n} bytes"
        )),
        Started::Pending => steps.step("receive with a routine, data already waiting: pending"),
    }
    check(slot.borrow().is_none(), || {
        "the routine ran outside an alertable wait".into()
    })?;
    let slept = sleep_ex(Some(STEP_TIMEOUT), true).context("sleeping alertably")?;
    check(slept == WaitExResult::IoCompletion, || {
        format!("the alertable sleep ended with {slept:?}, not WAIT_IO_COMPLETION")
    })?;
    let call = take_call(slot, "the second receive")?;
    steps.more(format_args!(
        "its routine was queued all the same (S30) and ran in the next alertable sleep: {}",
        quoted(&call.data)
    ));
    let idle = sleep_ex(Some(Duration::ZERO), true).context("sleeping alertably")?;
    check(idle == WaitExResult::Timeout, || {
        format!("an alertable sleep with nothing queued returned {idle:?}")
    })?;
    steps.step("alertable sleep with no routine queued: it lasts its time (returns 0)");
    Ok(())
}

/// Posts a receive on `server` whose routine leaves its call in `slot`.
fn post_receive(server: &Socket, ov: Overlapped, slot: &Slot) -> Outcome<Started> {
    let slot = slot.clone();
    let routine = move |error: Option<Error>, bytes: usize, ov: Overlapped, flags: u32| {
        let mut data = ov
            .take_buffers()
            .ok()
            .and_then(|mut bufs| bufs.pop())
            .unwrap_or_default();
        data.truncate(bytes);
        *slot.borrow_mut() = Some(Call {
            error,
            bytes,
            flags,
            data,
            thread: thread::current().id(),
        });
    };
    server
        .recv_with_routine(ov, vec![vec![0; 64]], 0, routine)
        .context("posting a receive with a routine")
}

/// The call the routine left, which must be a success.
fn take_call(slot: &Slot, what: &str) -> Outcome<Call> {
    let call = slot
        .borrow_mut()
        .take()
        .ok_or_else(|| Failure::new(format!("{what}: the alertable wait ran no routine")))?;
    match call.error {
        None => Ok(call),
        Some(e) => Err(Failure::new(format!("{what}: the routine reported {e}"))),
    }
}
