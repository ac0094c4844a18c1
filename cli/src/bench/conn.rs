//! One client connection of the load generator: what it sent, what it expects back, and when.
//!
//! Every message has its own content, a function of (connection id, message number), so a byte
//! echoed to the wrong connection, out of order, twice or corrupted is caught. Bytes come back
//! in pieces of any size; [`Conn::absorb`] checks each piece against the message it belongs to and
//! counts a message done when its last byte has arrived.

use std::collections::VecDeque;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

/// A mismatch or a broken connection; the connection is closed, the run carries on.
pub type ConnError = String;

/// One connection and its pipeline.
pub struct Conn {
    /// The connection's number across all threads; part of every message's content.
    pub id: u64,
    stream: TcpStream,
    size: usize,
    /// Bytes queued for the socket, and how many of them were written already.
    out: Vec<u8>,
    out_pos: usize,
    /// Whether the connection waits for `EPOLLOUT` (a write was short).
    pub wants_out: bool,
    /// Messages sent: the next message's number.
    sent: u64,
    /// The message being received, its content, and how many of its bytes arrived.
    recv_seq: u64,
    expect: Vec<u8>,
    recv_off: usize,
    /// Start times (scheduled or actual) of the messages in flight, oldest first.
    in_flight: VecDeque<Instant>,
    /// Scheduled times of paced messages not sent yet because the pipeline was full.
    pub backlog: VecDeque<Instant>,
}

impl Conn {
    pub fn new(id: u64, stream: TcpStream, size: usize) -> Conn {
        Conn {
            id,
            stream,
            size,
            out: Vec::with_capacity(size * 4),
            out_pos: 0,
            wants_out: false,
            sent: 0,
            recv_seq: 0,
            expect: Vec::with_capacity(size),
            recv_off: 0,
            in_flight: VecDeque::new(),
            backlog: VecDeque::new(),
        }
    }

    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Queues the next message, whose latency counts from `start`. Call [`Conn::flush`] after.
    pub fn queue(&mut self, start: Instant) {
        fill(self.id, self.sent, self.size, &mut self.out);
        self.sent += 1;
        self.in_flight.push_back(start);
    }

    /// Writes what is queued; `Ok(true)` if everything went, `Ok(false)` if the socket is full.
    pub fn flush(&mut self) -> Result<bool, ConnError> {
        while self.out_pos < self.out.len() {
            let rest = &self.out[self.out_pos..];
            // SAFETY: `rest` is valid for reads of its length for the whole call.
            let n = unsafe { libc::write(self.fd(), rest.as_ptr().cast(), rest.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::WouldBlock => return Ok(false),
                    std::io::ErrorKind::Interrupted => continue,
                    _ => return Err(format!("connection {}: write: {e}", self.id)),
                }
            }
            self.out_pos += n as usize;
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(true)
    }

    /// Checks echoed bytes; calls `done(start)` for each message completed by them.
    pub fn absorb(
        &mut self,
        mut data: &[u8],
        mut done: impl FnMut(Instant),
    ) -> Result<(), ConnError> {
        while !data.is_empty() {
            if self.recv_seq == self.sent {
                return Err(format!(
                    "connection {}: {} bytes arrived that were never sent",
                    self.id,
                    data.len()
                ));
            }
            if self.recv_off == 0 {
                self.expect.clear();
                fill(self.id, self.recv_seq, self.size, &mut self.expect);
            }
            let take = data.len().min(self.size - self.recv_off);
            let want = &self.expect[self.recv_off..self.recv_off + take];
            if let Some(at) = want.iter().zip(&data[..take]).position(|(a, b)| a != b) {
                return Err(format!(
                    "connection {}: message {} byte {}: expected {:#04x}, got {:#04x}",
                    self.id,
                    self.recv_seq,
                    self.recv_off + at,
                    want[at],
                    data[at]
                ));
            }
            self.recv_off += take;
            data = &data[take..];
            if self.recv_off == self.size {
                self.recv_off = 0;
                self.recv_seq += 1;
                let start = self.in_flight.pop_front().expect("a message in flight");
                done(start);
            }
        }
        Ok(())
    }
}

/// Appends message `seq` of connection `id`: `size` bytes from a generator seeded by both.
pub fn fill(id: u64, seq: u64, size: usize, out: &mut Vec<u8>) {
    let mut state = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq.rotate_left(32) ^ 0x5851_f42d;
    let mut left = size;
    while left > 0 {
        let word = splitmix64(&mut state).to_le_bytes();
        let take = left.min(8);
        out.extend_from_slice(&word[..take]);
        left -= take;
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_differ_by_connection_and_number() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let mut c = Vec::new();
        fill(1, 2, 32, &mut a);
        fill(2, 2, 32, &mut b);
        fill(1, 3, 32, &mut c);
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_ne!(a, c);
        let mut again = Vec::new();
        fill(1, 2, 32, &mut again);
        assert_eq!(a, again);
    }
}
