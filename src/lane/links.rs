//! A lane's two message links besides its producers and PostgreSQL: the
//! control socket to its supervisor (fd 4) and the socket to its connector.
//!
//! Both are `SOCK_SEQPACKET`, and both drivers (io_uring and poll) wait for
//! them to be readable and then call in here, which reads with plain
//! non-blocking `recvmsg` and tells the core what happened.
//!
//! Control messages: lane → supervisor `S` + the status lines, once the
//! sandbox is entered (the supervisor writes them to
//! `run/lane-<module>.status` under the pid it knows); `M` + the metrics
//! lines every `LANE_METRICS_INTERVAL_MS`; `B` + 1 byte (1: spooled records
//! wait with every commit stream in use busy, 0: not) when that changes, at
//! most once per `LANE_BACKLOG_REPORT_MS`. Supervisor → lane `D`: drain
//! and exit; `W` + 1 byte: the commit streams this lane may use now. End of
//! stream from the supervisor also drains (its death; the parent-death
//! signal says the same).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use super::connector::{self, ConnectorReply};
use super::core::{LaneCore, Now};
use super::runtime::LaneError;
use crate::base::limits::PG_SEND_BUFFER_BYTES;
use crate::base::sys::fdpass::{receive_message, send_message, send_message_nowait};

/// The lane's status, once it serves.
pub const CONTROL_STATUS: u8 = b'S';
/// Drain and exit.
pub const CONTROL_DRAIN: u8 = b'D';
/// The lane's metrics (`LaneCore::metrics_lines`), every `LANE_METRICS_INTERVAL_MS`.
pub const CONTROL_METRICS: u8 = b'M';
/// Whether the lane's spooled records wait for a commit stream (+ 1 byte).
pub const CONTROL_BACKLOG: u8 = b'B';
/// The commit streams the lane may use (+ 1 byte).
pub const CONTROL_STREAMS: u8 = b'W';
/// Largest control message: the status lines of a lane.
pub const CONTROL_MESSAGE_BYTES_MAX: usize = 4096;

pub struct Links {
    /// To the supervisor.
    pub control: OwnedFd,
    /// To the connector (the lane's child process).
    pub connector: OwnedFd,
    /// When the next metrics message is due (monotonic ms).
    pub metrics_due_ms: std::cell::Cell<u64>,
    /// The backlog state last reported, and when (monotonic ms).
    pub backlog_reported: std::cell::Cell<(bool, u64)>,
}

impl Links {
    pub fn new(control: OwnedFd, connector: OwnedFd) -> Links {
        Links {
            control,
            connector,
            metrics_due_ms: std::cell::Cell::new(0),
            backlog_reported: std::cell::Cell::new((false, 0)),
        }
    }

    /// Tell the supervisor when the lane's backlog state changed (at most
    /// once per `LANE_BACKLOG_REPORT_MS`; a full control socket skips it
    /// and the next turn tries again).
    pub fn report_backlog_if_changed(&self, core: &LaneCore, now: Now) {
        let (reported, at_ms) = self.backlog_reported.get();
        let backlogged = core.backlogged();
        if backlogged == reported || now.mono_ms < at_ms + crate::base::limits::LANE_BACKLOG_REPORT_MS {
            return;
        }
        if send_message_nowait(self.control.as_fd(), &[CONTROL_BACKLOG, u8::from(backlogged)]).is_ok() {
            self.backlog_reported.set((backlogged, now.mono_ms));
        }
    }
}

impl Links {
    /// Send the status lines to the supervisor.
    pub fn send_status(&self, lines: &str) -> Result<(), LaneError> {
        let mut message = vec![CONTROL_STATUS];
        message.extend_from_slice(lines.as_bytes());
        if message.len() > CONTROL_MESSAGE_BYTES_MAX {
            return Err(LaneError::Io { step: "send status", source: std::io::Error::other("status too long") });
        }
        send_message(self.control.as_fd(), &message, None).map_err(LaneError::io("send status"))
    }

    /// Send the lane's metrics to the supervisor when they are due. A full
    /// control socket (a supervisor that does not read) skips this report:
    /// metrics never block the lane.
    pub fn report_metrics_if_due(&self, core: &LaneCore, now: Now) {
        if now.mono_ms < self.metrics_due_ms.get() {
            return;
        }
        self.metrics_due_ms.set(now.mono_ms + crate::base::limits::LANE_METRICS_INTERVAL_MS);
        let mut message = vec![CONTROL_METRICS];
        message.extend_from_slice(core.metrics_lines().as_bytes());
        if message.len() <= CONTROL_MESSAGE_BYTES_MAX {
            let _ = send_message_nowait(self.control.as_fd(), &message);
        }
    }

    /// The control socket is readable: a drain request, or the supervisor is gone.
    pub fn on_control_readable(&self, core: &mut LaneCore) {
        let mut buffer = [0u8; 16];
        loop {
            match receive_message(self.control.as_fd(), &mut buffer) {
                Ok(None) => return,
                Ok(Some(message)) if message.len == 0 => {
                    tracing::warn!(lane = core.module().name(), "supervisor closed the control socket: draining");
                    core.begin_drain();
                    return;
                }
                Ok(Some(message)) if buffer[..message.len] == [CONTROL_DRAIN] => core.begin_drain(),
                Ok(Some(message)) if message.len == 2 && buffer[0] == CONTROL_STREAMS => {
                    core.set_active_streams(usize::from(buffer[1]))
                }
                Ok(Some(message)) => {
                    tracing::warn!(lane = core.module().name(), bytes = message.len, "unknown control message ignored")
                }
                Err(e) => {
                    tracing::warn!(lane = core.module().name(), error = %e, "control socket failed: draining");
                    core.begin_drain();
                    return;
                }
            }
        }
    }

    /// Ask the connector for a connection for every link that wants one
    /// and whose socket the driver has closed (`free(link)`).
    pub fn request_if_wanted(
        &self,
        core: &mut LaneCore,
        now: Now,
        free: impl Fn(usize) -> bool,
    ) -> Result<(), LaneError> {
        for link in 0..core.commit_streams() {
            if core.pg_wants_connect(link, now) && free(link) {
                connector::request_connection(self.connector.as_fd()).map_err(LaneError::io("ask the connector"))?;
                core.pg_connect_requested(link);
            }
        }
        Ok(())
    }

    /// The connector socket is readable: a connection (returned with the
    /// link it serves), a failure, or the connector is gone (then the lane
    /// cannot reconnect and must exit: the supervisor restarts it with a
    /// new connector).
    pub fn on_connector_readable(
        &self,
        core: &mut LaneCore,
        now: Now,
    ) -> Result<Option<(usize, UnixStream)>, LaneError> {
        let reply = connector::receive_reply(self.connector.as_fd()).map_err(LaneError::io("connector reply"))?;
        match reply {
            None => Ok(None),
            Some(ConnectorReply::Connected(stream, leftover)) => match core.pg_connected(leftover) {
                Some(link) => {
                    log_send_buffer(core.module(), link, &stream);
                    Ok(Some((link, stream)))
                }
                None => {
                    tracing::warn!(lane = core.module().name(), "connection arrived unasked: closed");
                    Ok(None)
                }
            },
            Some(ConnectorReply::Failed(why)) => {
                core.pg_connect_failed(&why, now);
                Ok(None)
            }
            Some(ConnectorReply::Gone) => Err(LaneError::ConnectorGone),
        }
    }
}

/// The send buffer a PostgreSQL connection got (`PG_SEND_BUFFER_BYTES` asked,
/// capped by `net.core.wmem_max`): debug normally, one WARN per lane process
/// when the cap left it below the request.
fn log_send_buffer(module: crate::model::matrix::Module, link: usize, stream: &UnixStream) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Ok(bytes) = crate::base::sys::send_buffer(stream.as_fd()) else { return };
    // The kernel reports twice what it was asked (its bookkeeping).
    if bytes >= 2 * PG_SEND_BUFFER_BYTES {
        tracing::debug!(lane = module.name(), link, send_buffer_bytes = bytes, "PostgreSQL connection send buffer");
    } else if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            lane = module.name(),
            link,
            send_buffer_bytes = bytes,
            wanted_bytes = 2 * PG_SEND_BUFFER_BYTES,
            "PostgreSQL connection send buffer capped by net.core.wmem_max: a backend waits sooner while the lane \
             writes or reads its spool (raise net.core.wmem_max to 4194304)"
        );
    }
}
