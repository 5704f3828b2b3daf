//! Bytes queued for one stream socket, in order, without copying the large
//! ones (sans-I/O: the drivers send [`SendQueue::front`] and
//! [`SendQueue::advance`] by what the socket took).
//!
//! Small encoded messages are appended to one open buffer
//! ([`SendQueue::buffer`]); a large payload that already sits in memory
//! elsewhere (a transaction's COPY chunks) is queued as a shared view
//! ([`SendQueue::push_shared`]), so a 16 MiB transaction is sent from
//! the chunks its rows were encoded into, not from a copy. A shared part
//! keeps its memory alive until it is sent or the queue is cleared, so
//! a transaction dropped while its send is in flight frees nothing the
//! kernel still reads.
//!
//! Invariant: `parts_len` is the sum of the parts' lengths, and no part
//! is empty.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

#[derive(Debug, Default)]
pub struct SendQueue {
    /// Sealed parts, oldest first, none empty.
    parts: VecDeque<Bytes>,
    parts_len: usize,
    /// Bytes after the last part, still being appended to.
    open: BytesMut,
}

impl From<BytesMut> for SendQueue {
    fn from(open: BytesMut) -> SendQueue {
        SendQueue { parts: VecDeque::new(), parts_len: 0, open }
    }
}

impl SendQueue {
    /// The open buffer: what is appended here goes out after everything
    /// queued before it.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.open
    }

    /// Queue `bytes` as they are, after everything queued so far.
    pub fn push_shared(&mut self, bytes: Bytes) {
        self.seal_open();
        self.push_part(bytes);
    }

    /// Move everything queued in `other` behind what is queued here.
    pub fn append(&mut self, other: &mut SendQueue) {
        self.seal_open();
        other.seal_open();
        while let Some(part) = other.parts.pop_front() {
            self.push_part(part);
        }
        other.parts_len = 0;
        self.check();
    }

    pub fn len(&self) -> usize {
        self.parts_len + self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many parts a send of everything would take (the open buffer counts as one).
    #[cfg(test)]
    fn parts(&self) -> usize {
        self.parts.len() + usize::from(!self.open.is_empty())
    }

    /// Keep only the first `len` bytes (a failpoint cuts a request at a stage).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.parts_len {
            self.open.truncate(len - self.parts_len);
            return;
        }
        self.open.clear();
        let mut kept = 0;
        let mut keep_parts = 0;
        for part in &mut self.parts {
            if kept + part.len() >= len {
                part.truncate(len - kept);
                kept = len;
                keep_parts += usize::from(!part.is_empty());
                break;
            }
            kept += part.len();
            keep_parts += 1;
        }
        self.parts.truncate(keep_parts);
        self.parts_len = kept;
        self.check();
    }

    /// Drop everything queued (the connection is gone).
    pub fn clear(&mut self) {
        self.parts.clear();
        self.parts_len = 0;
        self.open.clear();
    }

    /// The next bytes to send: all of the oldest part (the open buffer is
    /// sealed into one when nothing else is queued). Empty when all is sent.
    pub fn front(&mut self) -> &[u8] {
        if self.parts.is_empty() {
            self.seal_open();
        }
        self.parts.front().map_or(&[][..], |part| &part[..])
    }

    /// The next bytes to send as up to `max` parts, oldest first, the open
    /// buffer sealed into the last one (for one vectored send). Empty when
    /// all is sent.
    pub fn fronts(&mut self, max: usize) -> impl Iterator<Item = &[u8]> {
        self.seal_open();
        self.parts.iter().take(max).map(|part| &part[..])
    }

    /// `n` bytes from the front were sent (across parts, as a vectored send
    /// of [`SendQueue::fronts`] may take them).
    pub fn advance(&mut self, n: usize) {
        let mut n = n;
        while n > 0 {
            let Some(part) = self.parts.front_mut() else { break };
            let taken = n.min(part.len());
            part.advance(taken);
            self.parts_len -= taken;
            n -= taken;
            if part.is_empty() {
                self.parts.pop_front();
            }
        }
        self.check();
    }

    /// Everything queued, in one buffer (a scripted peer reads requests whole).
    pub fn into_vec(mut self) -> Vec<u8> {
        let mut all = Vec::with_capacity(self.len());
        loop {
            let front = self.front();
            if front.is_empty() {
                return all;
            }
            all.extend_from_slice(front);
            let n = front.len();
            self.advance(n);
        }
    }

    fn seal_open(&mut self) {
        if !self.open.is_empty() {
            // The open buffer keeps the rest of its allocation for what is
            // appended next; the sealed part shares the allocation.
            let sealed = self.open.split().freeze();
            self.push_part(sealed);
        }
    }

    fn push_part(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.parts_len += part.len();
            self.parts.push_back(part);
        }
    }

    fn check(&self) {
        debug_assert_eq!(self.parts_len, self.parts.iter().map(Bytes::len).sum::<usize>(), "parts_len drifted");
        debug_assert!(self.parts.iter().all(|p| !p.is_empty()), "an empty part is queued");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drain a queue the way a driver does, `step` bytes per send at most.
    fn drain(queue: &mut SendQueue, step: usize) -> Vec<u8> {
        let mut sent = Vec::new();
        loop {
            let front = queue.front();
            if front.is_empty() {
                break;
            }
            let n = front.len().min(step);
            sent.extend_from_slice(&front[..n]);
            queue.advance(n);
        }
        assert!(queue.is_empty());
        sent
    }

    fn sample() -> (SendQueue, Vec<u8>) {
        let mut queue = SendQueue::default();
        queue.buffer().extend_from_slice(b"BEGIN;");
        queue.push_shared(Bytes::from_static(b"<chunk one>"));
        queue.buffer().extend_from_slice(b"|");
        queue.push_shared(Bytes::from_static(b"<chunk two>"));
        queue.push_shared(Bytes::new());
        queue.buffer().extend_from_slice(b"COMMIT;");
        (queue, b"BEGIN;<chunk one>|<chunk two>COMMIT;".to_vec())
    }

    #[test]
    fn parts_go_out_in_the_order_they_were_queued_whatever_the_socket_takes() {
        for step in [1, 3, 7, 64] {
            let (mut queue, expected) = sample();
            assert_eq!(queue.len(), expected.len());
            assert_eq!(queue.parts(), 5, "the empty shared part is not queued");
            assert_eq!(drain(&mut queue, step), expected, "step {step}");
        }
    }

    #[test]
    fn vectored_sends_take_any_count_of_bytes_across_parts_in_order() {
        // A vectored send of up to `max` parts, of which the socket takes `step` bytes.
        for max in [1, 2, 3, 8] {
            for step in [1, 5, 11, 12, 17, 64] {
                let (mut queue, expected) = sample();
                let mut sent = Vec::new();
                loop {
                    let offered: Vec<u8> = queue.fronts(max).flatten().copied().collect();
                    if offered.is_empty() {
                        break;
                    }
                    assert!(queue.fronts(max).count() <= max);
                    let n = offered.len().min(step);
                    sent.extend_from_slice(&offered[..n]);
                    queue.advance(n);
                    assert_eq!(queue.len(), expected.len() - sent.len(), "max {max} step {step}");
                }
                assert_eq!(sent, expected, "max {max} step {step}");
                assert!(queue.is_empty());
            }
        }
    }

    #[test]
    fn truncate_keeps_exactly_a_prefix_at_every_cut() {
        let (_, expected) = sample();
        for cut in 0..=expected.len() + 2 {
            let (mut queue, _) = sample();
            queue.truncate(cut);
            let keep = cut.min(expected.len());
            assert_eq!(queue.len(), keep, "cut {cut}");
            assert_eq!(drain(&mut queue, 5), expected[..keep], "cut {cut}");
        }
    }

    #[test]
    fn append_moves_another_queue_behind_this_one() {
        let (mut first, mut expected) = sample();
        let (mut second, more) = sample();
        first.advance(0);
        first.append(&mut second);
        assert!(second.is_empty());
        expected.extend_from_slice(&more);
        assert_eq!(drain(&mut first, 4), expected);
    }

    #[test]
    fn a_shared_part_outlives_its_owner_until_sent() {
        let mut queue = SendQueue::default();
        {
            let owner = Bytes::from(vec![7u8; 1024]);
            queue.push_shared(owner.slice(10..20));
        }
        assert_eq!(drain(&mut queue, 3), vec![7u8; 10]);
    }
}
