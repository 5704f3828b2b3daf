//! A lane's io_uring: a safe wrapper that owns every buffer an operation
//! in flight points to.
//!
//! The ring is created disabled, restricted to the opcodes a lane uses
//! (IORING_REGISTER_RESTRICTIONS: Accept, Recv, SendMsg, PollAdd, no SQE
//! flags, no register opcodes at all afterwards), then enabled (Q4 of
//! shared/reference/io-uring-feasibility.md). It never uses SQPOLL or
//! registered personalities, which would carry the creating credentials
//! past the sandbox. Buffers: one receive buffer per slot, allocated once
//! (STYLE S9), and the send queue handed over by the caller (up to
//! `RING_SEND_PARTS_MAX` of its parts offered by one SENDMSG, in order,
//! through vectors allocated once per slot); each is
//! marked busy from submission until its completion is reaped, so the
//! kernel never writes into or reads from freed memory. In-flight
//! operations never exceed the completion-queue size.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, opcode, register::Restriction, squeue};

use crate::base::limits::RING_SEND_PARTS_MAX;
use crate::base::sendq::SendQueue;

/// Which operation a completion belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Accept,
    /// Readiness of one of the caller's descriptors ([`POLL_KEYS`] of them).
    Poll(usize),
    Recv(usize),
    Send(usize),
    Probe,
}

/// Descriptors the ring can watch for readability at once (a lane's
/// signalfd, control socket and connector socket).
pub const POLL_KEYS: usize = 4;

fn encode_op(op: Op) -> u64 {
    match op {
        Op::Accept => 1 << 32,
        Op::Poll(key) => (2 << 32) | key as u64,
        Op::Recv(slot) => (3 << 32) | slot as u64,
        Op::Send(slot) => (4 << 32) | slot as u64,
        Op::Probe => 5 << 32,
    }
}

fn decode_op(user_data: u64) -> Option<Op> {
    let slot = (user_data & 0xffff_ffff) as usize;
    match user_data >> 32 {
        1 => Some(Op::Accept),
        2 => Some(Op::Poll(slot)),
        3 => Some(Op::Recv(slot)),
        4 => Some(Op::Send(slot)),
        5 => Some(Op::Probe),
        _ => None,
    }
}

/// A reaped completion.
#[derive(Debug)]
pub enum Completion {
    Accept(io::Result<OwnedFd>),
    /// The descriptor watched under this key is readable (or failed); the
    /// caller reads it with an ordinary system call.
    Readable(usize),
    /// Bytes are in [`Ring::received`] for this slot.
    Recv {
        slot: usize,
        result: io::Result<usize>,
    },
    /// The send finished: all of it, or failed. Partial sends are resubmitted internally.
    Send {
        slot: usize,
        result: io::Result<()>,
    },
}

struct SlotBuffers {
    recv: Box<[u8]>,
    recv_busy: bool,
    send: SendQueue,
    send_busy: bool,
    send_fd: i32,
    /// The vectors and header of the slot's SENDMSG, pointing into `send`'s
    /// first parts (allocated once; read by the kernel until the completion).
    send_iov: Box<[libc::iovec]>,
    send_msg: Box<libc::msghdr>,
}

pub struct Ring {
    ring: IoUring,
    slots: Vec<SlotBuffers>,
    poll_busy: [bool; POLL_KEYS],
    accept_busy: bool,
    in_flight: usize,
    capacity: usize,
    probe_path: Option<std::ffi::CString>,
    probe_result: Option<i32>,
}

fn result_of(code: i32) -> io::Result<usize> {
    if code < 0 { Err(io::Error::from_raw_os_error(-code)) } else { Ok(code as usize) }
}

impl Ring {
    /// Create the ring disabled, register the opcode allow-list, enable it.
    pub fn new(entries: u32, slots: usize, recv_bytes: usize) -> io::Result<Ring> {
        let ring: IoUring = IoUring::builder().setup_r_disabled().build(entries)?;
        let mut allowed = [
            Restriction::sqe_op(opcode::Accept::CODE),
            Restriction::sqe_op(opcode::Recv::CODE),
            Restriction::sqe_op(opcode::SendMsg::CODE),
            Restriction::sqe_op(opcode::PollAdd::CODE),
            Restriction::sqe_flags_allowed(0),
        ];
        ring.submitter().register_restrictions(&mut allowed)?;
        ring.submitter().register_enable_rings()?;
        let capacity = ring.params().cq_entries() as usize;
        let slots = (0..slots)
            .map(|_| SlotBuffers {
                recv: vec![0u8; recv_bytes].into_boxed_slice(),
                recv_busy: false,
                send: SendQueue::default(),
                send_busy: false,
                send_fd: -1,
                send_iov: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; RING_SEND_PARTS_MAX]
                    .into_boxed_slice(),
                // SAFETY: msghdr is a C struct of integers and pointers, for
                // which all zeros is a valid value (no address, no vectors,
                // no control data, no flags).
                send_msg: Box::new(unsafe { std::mem::zeroed::<libc::msghdr>() }),
            })
            .collect();
        Ok(Ring {
            ring,
            slots,
            poll_busy: [false; POLL_KEYS],
            accept_busy: false,
            in_flight: 0,
            capacity,
            probe_path: None,
            probe_result: None,
        })
    }

    /// The raw descriptor of the ring (for /proc checks).
    pub fn as_raw_fd(&self) -> i32 {
        self.ring.as_raw_fd()
    }

    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        if self.in_flight >= self.capacity {
            return Err(io::Error::other("completion queue would overflow"));
        }
        // SAFETY: every pointer in `entry` refers to a buffer owned by this
        // Ring (a slot's receive buffer, or its send header and vectors and
        // the send queue's parts they point to; a poll has none) that
        // was marked busy by the caller and is neither moved, reallocated
        // nor dropped until the completion is reaped in `wait`.
        unsafe { self.ring.submission().push(&entry) }.map_err(|_| io::Error::other("submission queue full"))?;
        self.in_flight += 1;
        Ok(())
    }

    pub fn accept_busy(&self) -> bool {
        self.accept_busy
    }

    pub fn accept(&mut self, listener: BorrowedFd<'_>) -> io::Result<()> {
        let entry = opcode::Accept::new(Fd(listener.as_raw_fd()), std::ptr::null_mut(), std::ptr::null_mut())
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(encode_op(Op::Accept));
        self.push(entry)?;
        self.accept_busy = true;
        Ok(())
    }

    /// Watch `fd` for readability under `key` (one-shot; nothing is read).
    pub fn poll_readable(&mut self, key: usize, fd: BorrowedFd<'_>) -> io::Result<()> {
        if self.poll_busy.get(key).copied().unwrap_or(true) {
            return Ok(());
        }
        let entry =
            opcode::PollAdd::new(Fd(fd.as_raw_fd()), libc::POLLIN as u32).build().user_data(encode_op(Op::Poll(key)));
        self.push(entry)?;
        self.poll_busy[key] = true;
        Ok(())
    }

    pub fn recv_busy(&self, slot: usize) -> bool {
        self.slots.get(slot).is_some_and(|s| s.recv_busy)
    }

    pub fn send_busy(&self, slot: usize) -> bool {
        self.slots.get(slot).is_some_and(|s| s.send_busy)
    }

    /// Whether any operation of this slot is in flight.
    pub fn slot_busy(&self, slot: usize) -> bool {
        self.recv_busy(slot) || self.send_busy(slot)
    }

    pub fn recv(&mut self, slot: usize, fd: BorrowedFd<'_>) -> io::Result<()> {
        let buffers = self.slots.get_mut(slot).ok_or_else(|| io::Error::other("no such slot"))?;
        if buffers.recv_busy {
            return Ok(());
        }
        let entry = opcode::Recv::new(Fd(fd.as_raw_fd()), buffers.recv.as_mut_ptr(), buffers.recv.len() as u32)
            .build()
            .user_data(encode_op(Op::Recv(slot)));
        buffers.recv_busy = true;
        let pushed = self.push(entry);
        if pushed.is_err() {
            self.slots[slot].recv_busy = false;
        }
        pushed
    }

    /// The bytes of a completed receive.
    pub fn received(&self, slot: usize, length: usize) -> &[u8] {
        self.slots.get(slot).map_or(&[][..], |s| &s.recv[..length.min(s.recv.len())])
    }

    /// Send all of `data`, part after part; the ring keeps it until the
    /// last part is sent (or a send fails).
    pub fn send(&mut self, slot: usize, fd: BorrowedFd<'_>, data: SendQueue) -> io::Result<()> {
        let buffers = self.slots.get_mut(slot).ok_or_else(|| io::Error::other("no such slot"))?;
        if buffers.send_busy {
            return Err(io::Error::other("send already in flight"));
        }
        buffers.send = data;
        buffers.send_fd = fd.as_raw_fd();
        self.submit_send(slot)
    }

    fn submit_send(&mut self, slot: usize) -> io::Result<()> {
        let buffers = &mut self.slots[slot];
        let send_fd = buffers.send_fd;
        // One SENDMSG offers the queue's first parts (a whole transaction:
        // its chunks and their CopyData headers): the socket takes as much
        // as its buffer holds at once.
        let mut parts = 0;
        for (iov, part) in buffers.send_iov.iter_mut().zip(buffers.send.fronts(RING_SEND_PARTS_MAX)) {
            iov.iov_base = part.as_ptr().cast_mut().cast();
            iov.iov_len = part.len();
            parts += 1;
        }
        buffers.send_msg.msg_iov = buffers.send_iov.as_mut_ptr();
        buffers.send_msg.msg_iovlen = parts;
        let entry = opcode::SendMsg::new(Fd(send_fd), &*buffers.send_msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(encode_op(Op::Send(slot)));
        buffers.send_busy = true;
        let pushed = self.push(entry);
        if pushed.is_err() {
            self.slots[slot].send_busy = false;
        }
        pushed
    }

    /// Submit what is queued, if anything, without waiting (completions are
    /// reaped by the next [`Ring::wait`]). [`Ring::wait`] queues the rest of
    /// a partial send while it reaps; this sends it on without a wait.
    pub fn submit(&mut self) -> io::Result<()> {
        if self.ring.submission().is_empty() {
            return Ok(());
        }
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Submit what is queued and wait up to `timeout` for completions.
    pub fn wait(&mut self, timeout: Duration, completions: &mut Vec<Completion>) -> io::Result<()> {
        let ts = Timespec::new().sec(timeout.as_secs()).nsec(timeout.subsec_nanos());
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)) => {}
            Err(e) => return Err(e),
        }
        let reaped: Vec<(u64, i32)> = self.ring.completion().map(|cqe| (cqe.user_data(), cqe.result())).collect();
        for (user_data, code) in reaped {
            self.in_flight -= 1;
            match decode_op(user_data) {
                Some(Op::Accept) => {
                    self.accept_busy = false;
                    // SAFETY: a non-negative accept result is a new descriptor we own.
                    completions
                        .push(Completion::Accept(result_of(code).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as i32) })));
                }
                Some(Op::Poll(key)) if key < POLL_KEYS => {
                    self.poll_busy[key] = false;
                    completions.push(Completion::Readable(key));
                }
                Some(Op::Recv(slot)) => {
                    self.slots[slot].recv_busy = false;
                    completions.push(Completion::Recv { slot, result: result_of(code) });
                }
                Some(Op::Send(slot)) => self.send_completed(slot, code, completions)?,
                Some(Op::Probe) => self.probe_result = Some(code),
                Some(Op::Poll(_)) | None => return Err(io::Error::other(format!("unknown completion {user_data:#x}"))),
            }
        }
        Ok(())
    }

    fn send_completed(&mut self, slot: usize, code: i32, completions: &mut Vec<Completion>) -> io::Result<()> {
        self.slots[slot].send_busy = false;
        match result_of(code) {
            Ok(0) => completions.push(Completion::Send { slot, result: Err(io::ErrorKind::WriteZero.into()) }),
            Ok(n) => {
                let buffers = &mut self.slots[slot];
                buffers.send.advance(n);
                if buffers.send.is_empty() {
                    completions.push(Completion::Send { slot, result: Ok(()) });
                } else {
                    self.submit_send(slot)?;
                }
            }
            Err(e) => completions.push(Completion::Send { slot, result: Err(e) }),
        }
        Ok(())
    }

    /// Sandbox probe: submit IORING_OP_OPENAT (which the restrictions do
    /// not allow) for `path` and return the completion's result code.
    pub fn probe_openat(&mut self, path: &str) -> io::Result<i32> {
        let path = std::ffi::CString::new(path).map_err(|_| io::Error::other("NUL in path"))?;
        let pointer = path.as_ptr();
        self.probe_path = Some(path);
        let entry = opcode::OpenAt::new(Fd(libc::AT_FDCWD), pointer).flags(libc::O_RDONLY | libc::O_CLOEXEC).build();
        self.push(entry.user_data(encode_op(Op::Probe)))?;
        let mut ignored = Vec::new();
        while self.probe_result.is_none() {
            self.wait(Duration::from_millis(100), &mut ignored)?;
        }
        Ok(self.probe_result.take().unwrap_or(0))
    }

    /// Operations still in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.in_flight > 0 {
            // The kernel may still touch buffers of operations in flight until
            // the ring is torn down; keep them alive for the process's life.
            for slot in std::mem::take(&mut self.slots) {
                std::mem::forget(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use bytes::Bytes;

    use super::*;

    /// One SENDMSG offers at most `RING_SEND_PARTS_MAX` parts: a queue of
    /// three times as many, far larger than the socket's buffer and read in
    /// small pieces by the peer, arrives whole and in order, each partial
    /// send resumed where it stopped (inside a part or between parts).
    #[test]
    fn a_send_of_many_parts_arrives_whole_and_in_order_through_partial_sends() {
        let Ok(mut ring) = Ring::new(8, 1, 64) else {
            eprintln!("io_uring unavailable here: skipped");
            return;
        };
        let (ours, mut peer) = UnixStream::pair().expect("socketpair");
        let mut queue = SendQueue::default();
        let mut expected = Vec::new();
        for i in 0..3 * RING_SEND_PARTS_MAX {
            let part: Vec<u8> = (0..1 + i * 997 % 70_000).map(|j| (i * 31 + j) as u8).collect();
            expected.extend_from_slice(&part);
            if i % 5 == 0 {
                queue.buffer().extend_from_slice(&part);
            } else {
                queue.push_shared(Bytes::from(part));
            }
        }
        let total = expected.len();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::with_capacity(total);
            let mut piece = vec![0u8; 4096];
            while got.len() < total {
                let n = peer.read(&mut piece).expect("read");
                assert!(n > 0, "the sender closed early");
                got.extend_from_slice(&piece[..n]);
            }
            got
        });
        ring.send(0, ours.as_fd(), queue).expect("submit");
        let mut completions = Vec::new();
        let result = loop {
            completions.clear();
            ring.wait(Duration::from_millis(100), &mut completions).expect("wait");
            if let Some(Completion::Send { slot, result }) = completions.pop() {
                assert_eq!(slot, 0);
                break result;
            }
        };
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(reader.join().expect("reader"), expected);
    }
}
