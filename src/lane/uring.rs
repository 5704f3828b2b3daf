//! The io_uring driver of a lane: one ring, one thread, no async runtime.
//!
//! Keeps an accept, a readiness poll of the signalfd, the control socket
//! and the connector socket, and per connection one receive and at most
//! one send in flight, all through [`crate::base::sys::uring::Ring`], which
//! owns the buffers. A connection is closed only once none of its
//! operations is in flight (a shutdown(2) wakes its pending receive).
//!
//! Order of a turn, so that PostgreSQL's backends wait as little as
//! possible on the lane's disk (the spool's writes and reads block this
//! thread): PostgreSQL's replies are handled first and what they queued
//! (the tail of the transaction next in the commit order) is submitted at
//! once; then the producers' bytes, the core's tick (seal, spool, start
//! requests) and every send; last, with everything submitted, the core
//! reads the next transaction's records back ahead of their turn.

use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use super::core::{Admission, LaneCore};
use super::links::Links;
use super::runtime::{Clock, LaneError};
use crate::base::limits::{COMMIT_STREAMS_MAX, LANE_CONNECTIONS_MAX, PG_READ_BUFFER_BYTES, RING_ENTRIES};
use crate::base::sendq::SendQueue;
use crate::base::sys;
use crate::base::sys::uring::{Completion, Ring};

/// Ring poll keys of the lane's descriptors other than sockets of producers and PostgreSQL.
const KEY_SIGNALS: usize = 0;
const KEY_CONTROL: usize = 1;
const KEY_CONNECTOR: usize = 2;

/// Ring slot of PostgreSQL link 0 (after the clients); link `n` is `PG_SLOT + n`.
const PG_SLOT: usize = LANE_CONNECTIONS_MAX;

struct Socket {
    stream: UnixStream,
    /// SO_PEERPIDFD of a producer, held while it is connected.
    _pidfd: Option<OwnedFd>,
    /// PostgreSQL only: output taken from the core while a send was in
    /// flight. A producer's output stays in the core until its previous
    /// send completed, so the core sees (and bounds) what it does not read.
    backlog: SendQueue,
    shut: bool,
}

/// A connection accepted while every slot was taken: it waits here (no
/// further accept meanwhile) for the slot the core is freeing for it.
struct Parked {
    stream: UnixStream,
    pidfd: Option<OwnedFd>,
    peer: sys::PeerCred,
}

impl Socket {
    fn new(stream: UnixStream) -> Socket {
        Socket { stream, _pidfd: None, backlog: SendQueue::default(), shut: false }
    }
}

/// Create the lane's ring: disabled, restricted, enabled.
pub fn create_ring() -> std::io::Result<Ring> {
    Ring::new(RING_ENTRIES, LANE_CONNECTIONS_MAX + COMMIT_STREAMS_MAX, PG_READ_BUFFER_BYTES)
}

pub fn run(
    core: &mut LaneCore,
    ring: &mut Ring,
    listener: &UnixListener,
    links: &Links,
    signals: &OwnedFd,
    clock: &Clock,
) -> Result<(), LaneError> {
    let mut clients: Vec<Option<Socket>> = (0..LANE_CONNECTIONS_MAX).map(|_| None).collect();
    let mut pg_sockets: Vec<Option<Socket>> = (0..core.commit_streams()).map(|_| None).collect();
    let mut parked: Option<Parked> = None;
    let mut completions = Vec::with_capacity(RING_ENTRIES as usize);
    loop {
        if let Some(fatal) = core.take_fatal() {
            return Err(LaneError::Fatal(fatal));
        }
        links.request_if_wanted(core, clock.now(), |link| pg_sockets[link].is_none())?;
        core.tick(clock.now());
        links.report_metrics_if_due(core, clock.now());
        links.report_backlog_if_changed(core, clock.now());
        pump_all_pg(core, ring, &mut pg_sockets)?;
        for slot in 0..clients.len() {
            pump_client(core, ring, &mut clients, slot)?;
        }
        if parked.is_some() && core.has_free_slot() {
            if let Some(p) = parked.take() {
                // Served now: its receive goes in before the wait below, or
                // its HELLO would sit until the next wake-up.
                if let Some(slot) = admit(core, &mut clients, &mut parked, p, clock) {
                    pump_client(core, ring, &mut clients, slot)?;
                }
            }
        }
        if parked.is_none() && core.wants_accept() && !ring.accept_busy() {
            ring.accept(listener.as_fd()).map_err(LaneError::io("submit accept"))?;
        }
        ring.poll_readable(KEY_SIGNALS, signals.as_fd()).map_err(LaneError::io("submit signal poll"))?;
        ring.poll_readable(KEY_CONTROL, links.control.as_fd()).map_err(LaneError::io("submit control poll"))?;
        ring.poll_readable(KEY_CONNECTOR, links.connector.as_fd()).map_err(LaneError::io("submit connector poll"))?;
        if core.drained() && clients.iter().all(Option::is_none) {
            return Ok(());
        }
        // Everything queued goes to the kernel before the lane reads the
        // next transaction's records back (which may block on the disk).
        ring.submit().map_err(LaneError::io("io_uring submit"))?;
        core.read_ahead(clock.now());
        let now = clock.now();
        let timeout_ms = core.next_deadline_ms().saturating_sub(now.mono_ms).clamp(1, 1000);
        completions.clear();
        ring.wait(Duration::from_millis(timeout_ms), &mut completions).map_err(LaneError::io("io_uring wait"))?;
        // PostgreSQL's replies first, and what they queued (the tail of the
        // transaction next in the commit order) handed to the kernel before
        // the producers' bytes and the next tick, which may write and read
        // the spool: a backend never waits on the lane's disk for a COMMIT.
        let is_pg = |c: &Completion| match c {
            Completion::Recv { slot, .. } | Completion::Send { slot, .. } => *slot >= PG_SLOT,
            Completion::Accept(_) | Completion::Readable(_) => false,
        };
        completions.sort_by_key(|c| !is_pg(c));
        let replies = completions.iter().take_while(|c| is_pg(c)).count();
        for completion in completions.drain(..replies) {
            handle(core, ring, &mut clients, &mut pg_sockets, completion, clock);
        }
        if replies > 0 {
            pump_all_pg(core, ring, &mut pg_sockets)?;
        }
        // Also the rest of any partial send, which the ring queued while reaping.
        ring.submit().map_err(LaneError::io("io_uring submit"))?;
        for completion in completions.drain(..) {
            match completion {
                Completion::Readable(KEY_SIGNALS) => {
                    super::runtime::drain_signals(signals);
                    core.begin_drain();
                }
                Completion::Readable(KEY_CONTROL) => links.on_control_readable(core),
                Completion::Readable(_) => {
                    if let Some((link, stream)) = links.on_connector_readable(core, clock.now())? {
                        pg_sockets[link] = Some(Socket::new(stream));
                    }
                }
                Completion::Accept(Ok(fd)) => {
                    let stream = UnixStream::from(fd);
                    let Ok(peer) = sys::peer_credentials(stream.as_fd()) else { continue };
                    let pidfd = sys::peer_pidfd(stream.as_fd()).ok().flatten();
                    let _ = admit(core, &mut clients, &mut parked, Parked { stream, pidfd, peer }, clock);
                }
                other => handle(core, ring, &mut clients, &mut pg_sockets, other, clock),
            }
        }
    }
}

/// Offer an accepted connection to the core: served (its slot returned),
/// parked for a slot being freed, or closed.
fn admit(
    core: &mut LaneCore,
    clients: &mut [Option<Socket>],
    parked: &mut Option<Parked>,
    p: Parked,
    clock: &Clock,
) -> Option<usize> {
    match core.admit(p.peer, p.pidfd.is_some(), clock.now()) {
        Admission::Slot(slot) => {
            let mut socket = Socket::new(p.stream);
            socket._pidfd = p.pidfd;
            clients[slot] = Some(socket);
            Some(slot)
        }
        Admission::Wait => {
            *parked = Some(p);
            None
        }
        Admission::Refused => None,
    }
}

fn shut(socket: &mut Socket) {
    if !socket.shut {
        socket.shut = true;
        let _ = socket.stream.shutdown(Shutdown::Both);
    }
}

/// Hand every PostgreSQL link's queued output to the ring (closing the
/// sockets of links the core let go).
fn pump_all_pg(core: &mut LaneCore, ring: &mut Ring, pg_sockets: &mut [Option<Socket>]) -> Result<(), LaneError> {
    for (link, socket) in pg_sockets.iter_mut().enumerate() {
        if !core.pg_link_connected(link) {
            if let Some(socket) = socket.as_mut() {
                shut(socket);
            }
        }
        pump_pg(core, ring, link, socket)?;
    }
    Ok(())
}

fn pump_pg(core: &mut LaneCore, ring: &mut Ring, link: usize, pg_socket: &mut Option<Socket>) -> Result<(), LaneError> {
    let Some(socket) = pg_socket.as_mut() else { return Ok(()) };
    let slot = PG_SLOT + link;
    if socket.shut {
        if !ring.slot_busy(slot) {
            *pg_socket = None;
        }
        return Ok(());
    }
    if let Some(mut more) = core.take_pg_output(link) {
        socket.backlog.append(&mut more); // parts moved, not copied
    }
    if !socket.backlog.is_empty() && !ring.send_busy(slot) {
        let data = std::mem::take(&mut socket.backlog);
        ring.send(slot, socket.stream.as_fd(), data).map_err(LaneError::io("submit pg send"))?;
    }
    if !ring.recv_busy(slot) {
        ring.recv(slot, socket.stream.as_fd()).map_err(LaneError::io("submit pg recv"))?;
    }
    Ok(())
}

fn pump_client(
    core: &mut LaneCore,
    ring: &mut Ring,
    clients: &mut [Option<Socket>],
    slot: usize,
) -> Result<(), LaneError> {
    let Some(socket) = clients[slot].as_mut() else { return Ok(()) };
    if !socket.shut && core.client_must_abort(slot) {
        // shutdown(2) ends the pending receive and a send the peer never read.
        shut(socket);
    }
    if !socket.shut {
        if !ring.send_busy(slot) {
            if let Some(data) = core.take_client_output(slot) {
                ring.send(slot, socket.stream.as_fd(), SendQueue::from(data)).map_err(LaneError::io("submit send"))?;
            }
        }
        if core.client_should_close(slot) && !ring.send_busy(slot) {
            shut(socket);
        } else if core.client_wants_read(slot) && !ring.recv_busy(slot) {
            ring.recv(slot, socket.stream.as_fd()).map_err(LaneError::io("submit recv"))?;
        }
    }
    if socket.shut && !ring.slot_busy(slot) {
        clients[slot] = None;
        core.client_gone(slot);
    }
    Ok(())
}

fn handle(
    core: &mut LaneCore,
    ring: &mut Ring,
    clients: &mut [Option<Socket>],
    pg_sockets: &mut [Option<Socket>],
    completion: Completion,
    clock: &Clock,
) {
    let pg_link = |slot: usize| slot.checked_sub(PG_SLOT).filter(|&link| link < pg_sockets.len());
    match completion {
        Completion::Accept(Ok(_)) => {} // taken by the loop (it may park the connection)
        Completion::Accept(Err(e)) => tracing::warn!(error = %e, "accept failed"),
        Completion::Readable(_) => {}
        Completion::Recv { slot, result } if pg_link(slot).is_some() => {
            let link = slot - PG_SLOT;
            match result {
                Ok(n) if n > 0 => core.on_pg_bytes(link, ring.received(slot, n), clock.now()),
                other => {
                    let why = other.err().map_or_else(|| "end of stream".to_string(), |e| e.to_string());
                    if let Some(socket) = pg_sockets[link].as_mut() {
                        if !socket.shut {
                            core.pg_lost(link, &why, clock.now());
                        }
                        shut(socket);
                    }
                }
            }
        }
        Completion::Send { slot, result: Err(e) } if pg_link(slot).is_some() => {
            let link = slot - PG_SLOT;
            if let Some(socket) = pg_sockets[link].as_mut() {
                if !socket.shut {
                    core.pg_lost(link, &e.to_string(), clock.now());
                }
                shut(socket);
            }
        }
        Completion::Send { slot, result: Ok(()) } if pg_link(slot).is_some() => {
            core.pg_sent(slot - PG_SLOT);
        }
        Completion::Recv { slot, result } => match result {
            Ok(n) if n > 0 => core.on_client_bytes(slot, ring.received(slot, n), clock.now()),
            // End of stream: the core answers a truncated frame, then the
            // pump closes the socket once that answer is sent.
            Ok(_) => core.on_client_eof(slot),
            Err(_) => {
                if let Some(socket) = clients.get_mut(slot).and_then(Option::as_mut) {
                    shut(socket);
                }
            }
        },
        Completion::Send { slot, result } => {
            if result.is_err() {
                if let Some(socket) = clients.get_mut(slot).and_then(Option::as_mut) {
                    shut(socket);
                }
            } else {
                core.client_sent(slot);
            }
        }
    }
}
