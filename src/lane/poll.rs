//! The poll(2) driver of a lane: the fallback where io_uring is
//! unavailable (for example blocked by a container's seccomp profile).
//!
//! Moves bytes between non-blocking sockets and the sans-I/O core; owns
//! every file descriptor of the lane's connections.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

use bytes::{Buf, BytesMut};

use super::core::{Admission, LaneCore};
use super::links::Links;
use super::runtime::{Clock, LaneError};
use crate::base::limits::{LANE_CONNECTIONS_MAX, PG_READ_BUFFER_BYTES};
use crate::base::sendq::SendQueue;
use crate::base::sys;

struct Client {
    stream: UnixStream,
    /// SO_PEERPIDFD of the producer, held while it is connected.
    _pidfd: Option<OwnedFd>,
    /// Output taken from the core, being written. More is taken only once
    /// this is written, so the core sees (and bounds) what the peer does
    /// not read.
    out: BytesMut,
}

/// A connection accepted while every slot was taken: it waits here (no
/// further accept meanwhile) for the slot the core is freeing for it.
struct Parked {
    stream: UnixStream,
    pidfd: Option<OwnedFd>,
    peer: sys::PeerCred,
}

/// One write of `bytes`: how many the socket took, or None when it is
/// full; Err on a dead socket.
fn write_some(stream: &mut UnixStream, bytes: &[u8]) -> std::io::Result<Option<usize>> {
    loop {
        match stream.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Write as much of `out` as the socket takes; Err on a dead socket.
fn flush(stream: &mut UnixStream, out: &mut BytesMut) -> std::io::Result<()> {
    while !out.is_empty() {
        let Some(n) = write_some(stream, out)? else { return Ok(()) };
        out.advance(n);
    }
    Ok(())
}

/// Write as much of `out` as the socket takes, part after part; Err on a dead socket.
fn flush_queue(stream: &mut UnixStream, out: &mut SendQueue) -> std::io::Result<()> {
    loop {
        let front = out.front();
        if front.is_empty() {
            return Ok(());
        }
        let Some(n) = write_some(stream, front)? else { return Ok(()) };
        out.advance(n);
    }
}

/// Fixed entries of the poll set before the PostgreSQL links' sockets
/// (then the producers').
const FIXED_FDS: usize = 4;

pub fn run(
    core: &mut LaneCore,
    listener: &UnixListener,
    links: &Links,
    signals: &OwnedFd,
    clock: &Clock,
) -> Result<(), LaneError> {
    listener.set_nonblocking(true).map_err(LaneError::io("listener non-blocking"))?;
    let mut clients: Vec<Option<Client>> = (0..LANE_CONNECTIONS_MAX).map(|_| None).collect();
    let streams = core.commit_streams();
    let mut pg_streams: Vec<Option<(UnixStream, SendQueue)>> = (0..streams).map(|_| None).collect();
    let mut parked: Option<Parked> = None;
    let mut buffer = vec![0u8; PG_READ_BUFFER_BYTES];
    loop {
        if let Some(fatal) = core.take_fatal() {
            return Err(LaneError::Fatal(fatal));
        }
        for (link, entry) in pg_streams.iter_mut().enumerate() {
            if !core.pg_link_connected(link) {
                *entry = None;
            }
        }
        links.request_if_wanted(core, clock.now(), |link| pg_streams[link].is_none())?;
        core.tick(clock.now());
        links.report_metrics_if_due(core, clock.now());
        links.report_backlog_if_changed(core, clock.now());
        // Move queued output to the sockets.
        flush_pg(core, &mut pg_streams, clock);
        for (slot, entry) in clients.iter_mut().enumerate() {
            let Some(client) = entry.as_mut() else { continue };
            if client.out.is_empty() {
                if let Some(more) = core.take_client_output(slot) {
                    client.out = more;
                }
            }
            let had_output = !client.out.is_empty();
            let dead = flush(&mut client.stream, &mut client.out).is_err();
            if !dead && had_output && client.out.is_empty() {
                core.client_sent(slot);
            }
            let done = client.out.is_empty() && core.client_should_close(slot);
            if dead || done || core.client_must_abort(slot) {
                *entry = None;
                core.client_gone(slot);
            }
        }
        if parked.is_some() && core.has_free_slot() {
            if let Some(p) = parked.take() {
                admit(core, &mut clients, &mut parked, p, clock);
            }
        }
        if core.drained() && clients.iter().all(Option::is_none) {
            return Ok(());
        }
        // Everything queued was written as far as the sockets took it:
        // read the next transaction's records back before waiting.
        core.read_ahead(clock.now());
        // Wait for readiness.
        let mut fds = vec![
            libc::pollfd { fd: signals.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd {
                fd: if parked.is_none() && core.wants_accept() { listener.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        fds.push(libc::pollfd { fd: links.control.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        fds.push(libc::pollfd { fd: links.connector.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        for pg_stream in &pg_streams {
            let pg_events = match pg_stream.as_ref() {
                Some((_, out)) if !out.is_empty() => libc::POLLIN | libc::POLLOUT,
                Some(_) => libc::POLLIN,
                None => 0,
            };
            fds.push(libc::pollfd {
                fd: pg_stream.as_ref().map_or(-1, |(s, _)| s.as_raw_fd()),
                events: pg_events,
                revents: 0,
            });
        }
        for (slot, client) in clients.iter().enumerate() {
            let (fd, mut events) = match client {
                Some(c) => (c.stream.as_raw_fd(), 0),
                None => (-1, 0),
            };
            if client.is_some() && core.client_wants_read(slot) {
                events |= libc::POLLIN;
            }
            if client.as_ref().is_some_and(|c| !c.out.is_empty()) {
                events |= libc::POLLOUT;
            }
            fds.push(libc::pollfd { fd, events, revents: 0 });
        }
        let now = clock.now();
        let timeout = core.next_deadline_ms().saturating_sub(now.mono_ms).min(1000) as i32;
        sys::poll(&mut fds, timeout).map_err(LaneError::io("poll"))?;
        if fds[0].revents != 0 {
            super::runtime::drain_signals(signals);
            core.begin_drain();
        }
        if fds[1].revents != 0 {
            accept_all(core, listener, &mut clients, &mut parked, clock);
        }
        for link in 0..streams {
            if fds[FIXED_FDS + link].revents == 0 {
                continue;
            }
            if let Some((stream, _)) = pg_streams[link].as_mut() {
                match read_some(stream, &mut buffer) {
                    Ok(Some(n)) => core.on_pg_bytes(link, &buffer[..n], clock.now()),
                    Ok(None) => {}
                    Err(end) => {
                        pg_streams[link] = None;
                        core.pg_lost(link, &end.to_string(), clock.now());
                    }
                }
            }
        }
        // What PostgreSQL's replies queued (the tail of the transaction next
        // in the commit order) goes out before the producers' bytes and the
        // next tick, which may write and read the spool.
        flush_pg(core, &mut pg_streams, clock);
        if fds[2].revents != 0 {
            links.on_control_readable(core);
        }
        if fds[3].revents != 0 {
            if let Some((link, stream)) = links.on_connector_readable(core, clock.now())? {
                pg_streams[link] = Some((stream, SendQueue::default()));
            }
        }
        for slot in 0..clients.len() {
            let revents = fds[FIXED_FDS + streams + slot].revents;
            if revents == 0 {
                continue;
            }
            let Some(client) = clients[slot].as_mut() else { continue };
            if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                match read_some(&mut client.stream, &mut buffer) {
                    Ok(Some(n)) => core.on_client_bytes(slot, &buffer[..n], clock.now()),
                    Ok(None) => {}
                    Err(ReadEnd::Eof) => core.on_client_eof(slot),
                    Err(ReadEnd::Failed(_)) => {
                        clients[slot] = None;
                        core.client_gone(slot);
                    }
                }
            }
        }
    }
}

/// Write what the core queued for each PostgreSQL link, as much as its
/// socket takes.
fn flush_pg(core: &mut LaneCore, pg_streams: &mut [Option<(UnixStream, SendQueue)>], clock: &Clock) {
    for (link, entry) in pg_streams.iter_mut().enumerate() {
        if !core.pg_link_connected(link) {
            // Reset or lost: what it still holds is never sent.
            *entry = None;
            continue;
        }
        let Some((stream, out)) = entry.as_mut() else { continue };
        if let Some(mut more) = core.take_pg_output(link) {
            out.append(&mut more); // parts moved, not copied
        }
        let had_output = !out.is_empty();
        match flush_queue(stream, out) {
            Err(e) => {
                *entry = None;
                core.pg_lost(link, &e.to_string(), clock.now());
            }
            Ok(()) if had_output && out.is_empty() => core.pg_sent(link),
            Ok(()) => {}
        }
    }
}

/// Why a socket stopped delivering bytes.
enum ReadEnd {
    Eof,
    Failed(std::io::Error),
}

impl std::fmt::Display for ReadEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadEnd::Eof => write!(f, "end of stream"),
            ReadEnd::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// One read: Some(n) bytes, None if it would block.
fn read_some(stream: &mut UnixStream, buffer: &mut [u8]) -> Result<Option<usize>, ReadEnd> {
    match stream.read(buffer) {
        Ok(0) => Err(ReadEnd::Eof),
        Ok(n) => Ok(Some(n)),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => Ok(None),
        Err(e) => Err(ReadEnd::Failed(e)),
    }
}

/// Offer an accepted connection to the core: served, parked for a slot
/// being freed, or closed.
fn admit(core: &mut LaneCore, clients: &mut [Option<Client>], parked: &mut Option<Parked>, p: Parked, clock: &Clock) {
    match core.admit(p.peer, p.pidfd.is_some(), clock.now()) {
        Admission::Slot(slot) => {
            clients[slot] = Some(Client { stream: p.stream, _pidfd: p.pidfd, out: BytesMut::new() });
        }
        Admission::Wait => *parked = Some(p),
        Admission::Refused => {}
    }
}

fn accept_all(
    core: &mut LaneCore,
    listener: &UnixListener,
    clients: &mut [Option<Client>],
    parked: &mut Option<Parked>,
    clock: &Clock,
) {
    while parked.is_none() {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                return;
            }
        };
        let Ok(peer) = sys::peer_credentials(stream.as_fd()) else { continue };
        let pidfd = sys::peer_pidfd(stream.as_fd()).ok().flatten();
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        admit(core, clients, parked, Parked { stream, pidfd, peer }, clock);
        if !core.wants_accept() {
            return;
        }
    }
}
