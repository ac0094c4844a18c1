//! The event scenario: the chapter's `overlapped_send` / `overlapped_recv` pair on one machine.
//!
//! The receiver posts an overlapped receive with an event *before* any data exists, so the reader
//! sees "pending" and an unsignalled event; the sender's overlapped send then either completes at
//! once or is pending (both are legal, S2/S3); a wait on the two events says which one is
//! signalled; the results are read from the overlapped objects. The same objects are then reused
//! for a scatter/gather receive (S6), a zero-byte receive (S9) and a graceful close (S10).

use std::net::Shutdown;

use overlapped::{codes, wait_for_events, Event, Overlapped, Socket, Started, WaitFor, WaitResult};

use super::{check, finished, loopback_pair, quoted, Steps, STEP_TIMEOUT};
use crate::failure::{Context, Failure, Outcome};

/// The chapter's message.
const MESSAGE: &[u8] = b"Network is Computer!";

/// Runs the scenario, printing each step.
pub fn run(steps: &mut Steps) -> Outcome<()> {
    let (_listener, client, server) = loopback_pair(steps)?;

    let recv_event = Event::new();
    let recv_ov = Overlapped::with_event(recv_event.clone());
    let send_event = Event::new();
    let send_ov = Overlapped::with_event(send_event.clone());

    receive_then_send(
        steps,
        &client,
        &server,
        (&recv_event, &recv_ov),
        (&send_event, &send_ov),
    )?;
    scatter_gather(steps, &client, &server, &recv_ov, &send_ov)?;
    zero_byte_receive(steps, &client, &server, &recv_ov, &send_ov)?;
    graceful_close(steps, client, &server, &recv_ov)
}

/// The heart of the chapter: receive posted first, then send, wait on the events, read results.
fn receive_then_send(
    steps: &mut Steps,
    client: &Socket,
    server: &Socket,
    (recv_event, recv_ov): (&Event, &Overlapped),
    (send_event, send_ov): (&Event, &Overlapped),
) -> Outcome<()> {
    let started = server
        .recv(recv_ov, vec![vec![0; 64]], 0)
        .context("posting the receive")?;
    check(started == Started::Pending, || {
        format!("a receive posted before any data was sent returned {started:?}, not pending")
    })?;
    steps.step("receive posted on the server side with an event, before any data: pending (WSA_IO_PENDING, 997)");
    match recv_ov.completion(false) {
        Err(e) if e.code() == codes::WSA_IO_INCOMPLETE => {}
        other => {
            return Err(Failure::new(format!(
                "asking a pending receive for its result gave {other:?}, not WSA_IO_INCOMPLETE"
            )))
        }
    }
    check(!recv_event.is_set(), || {
        "the receive's event is signalled though nothing arrived".into()
    })?;
    steps.more("its event is not signalled; asking for the result without waiting: WSA_IO_INCOMPLETE (996)");

    let started = client
        .send(send_ov, vec![MESSAGE.to_vec()], 0)
        .context("sending the message")?;
    match started {
        Started::Done(n) => steps.step(format_args!(
            "send of {} with an event: completed at once, {n} bytes (its event is signalled all the same)",
            quoted(MESSAGE)
        )),
        Started::Pending => steps.step(format_args!(
            "send of {} with an event: pending",
            quoted(MESSAGE)
        )),
    }

    let names = ["receive", "send"];
    let events = [recv_event, send_event];
    let first = match wait_for_events(&events, WaitFor::Any, Some(STEP_TIMEOUT))
        .context("waiting for either event")?
    {
        WaitResult::Signalled(i) => i,
        WaitResult::Timeout => return Err(Failure::new("neither event was signalled in time")),
    };
    steps.step(format_args!(
        "wait for any of [receive, send]: index {first} ({}) signalled",
        names[first]
    ));
    match wait_for_events(&events, WaitFor::All, Some(STEP_TIMEOUT))
        .context("waiting for both events")?
    {
        WaitResult::Signalled(_) => steps.more("wait for all of them: both signalled"),
        WaitResult::Timeout => {
            return Err(Failure::new(
                "the two events were not both signalled in time",
            ))
        }
    }

    let sent = finished(send_ov, "the send")?;
    check(sent.bytes == MESSAGE.len(), || {
        format!(
            "the send completed with {} bytes, not {}",
            sent.bytes,
            MESSAGE.len()
        )
    })?;
    steps.step(format_args!(
        "send result from its overlapped object: {} bytes, flags {:#x}",
        sent.bytes, sent.flags
    ));
    let received = finished(recv_ov, "the receive")?;
    steps.step(format_args!(
        "receive result from its overlapped object: {} bytes, flags {:#x}",
        received.bytes, received.flags
    ));
    let bufs = recv_ov
        .take_buffers()
        .context("taking back the receive buffer")?;
    let message = &bufs[0][..received.bytes];
    check(message == MESSAGE, || {
        format!("received {}, expected {}", quoted(message), quoted(MESSAGE))
    })?;
    steps.more(format_args!("received message: {}", quoted(message)));
    Ok(())
}

/// Nine bytes received into buffers of four and five, in order with no gap (S6).
fn scatter_gather(
    steps: &mut Steps,
    client: &Socket,
    server: &Socket,
    recv_ov: &Overlapped,
    send_ov: &Overlapped,
) -> Outcome<()> {
    let data = b"deadbeefs";
    let _ = client
        .send(send_ov, vec![data.to_vec()], 0)
        .context("sending the scatter/gather data")?;
    finished(send_ov, "the scatter/gather send")?;
    let started = server
        .recv(recv_ov, vec![vec![0; 4], vec![0; 5]], 0)
        .context("posting the scatter/gather receive")?;
    let received = finished(recv_ov, "the scatter/gather receive")?;
    let bufs = recv_ov
        .take_buffers()
        .context("taking back the two buffers")?;
    let at_once = match started {
        Started::Done(_) => "at once",
        Started::Pending => "after pending",
    };
    steps.step(format_args!(
        "scatter/gather: {} sent, received into buffers of 4 and 5 bytes: {} bytes {at_once}",
        quoted(data),
        received.bytes
    ));
    check(
        received.bytes == data.len() && bufs[0] == b"dead" && bufs[1] == b"beefs",
        || {
            format!(
                "the two buffers hold {} and {} ({} bytes), expected \"dead\" and \"beefs\"",
                quoted(&bufs[0]),
                quoted(&bufs[1]),
                received.bytes
            )
        },
    )?;
    steps.more(format_args!(
        "buffer 1 = {}, buffer 2 = {}",
        quoted(&bufs[0]),
        quoted(&bufs[1])
    ));
    Ok(())
}

/// A receive into an empty buffer waits for data without taking it (S9).
fn zero_byte_receive(
    steps: &mut Steps,
    client: &Socket,
    server: &Socket,
    recv_ov: &Overlapped,
    send_ov: &Overlapped,
) -> Outcome<()> {
    let started = server
        .recv(recv_ov, vec![Vec::new()], 0)
        .context("posting the zero-byte receive")?;
    check(started == Started::Pending, || {
        format!("a zero-byte receive with no data waiting returned {started:?}, not pending")
    })?;
    steps.step("zero-byte receive posted with no data waiting: pending");
    let data = b"ping";
    let _ = client
        .send(send_ov, vec![data.to_vec()], 0)
        .context("sending after the zero-byte receive")?;
    finished(send_ov, "the send after the zero-byte receive")?;
    let woke = finished(recv_ov, "the zero-byte receive")?;
    check(woke.bytes == 0, || {
        format!("the zero-byte receive completed with {} bytes", woke.bytes)
    })?;
    let _ = server
        .recv(recv_ov, vec![vec![0; 16]], 0)
        .context("receiving the data the zero-byte receive left")?;
    let got = finished(recv_ov, "the receive after the zero-byte receive")?;
    let bufs = recv_ov.take_buffers().context("taking back the buffer")?;
    let text = &bufs[0][..got.bytes];
    check(text == data, || {
        format!(
            "after the zero-byte receive, read {}, expected {}",
            quoted(text),
            quoted(data)
        )
    })?;
    steps.more(format_args!(
        "{} arrived: it completed with 0 bytes; the next receive read {} bytes, {}",
        quoted(data),
        got.bytes,
        quoted(text)
    ));
    Ok(())
}

/// The peer closes gracefully: a receive completes with 0 bytes, successfully (S10).
fn graceful_close(
    steps: &mut Steps,
    client: Socket,
    server: &Socket,
    recv_ov: &Overlapped,
) -> Outcome<()> {
    client
        .shutdown(Shutdown::Both)
        .context("shutting the client down")?;
    drop(client);
    let _ = server
        .recv(recv_ov, vec![vec![0; 16]], 0)
        .context("receiving after the client closed")?;
    let end = finished(recv_ov, "the receive after the client closed")?;
    check(end.bytes == 0, || {
        format!("after the client closed, a receive got {} bytes", end.bytes)
    })?;
    steps.step("client closed: the server's next receive completed successfully with 0 bytes");
    Ok(())
}
