//! The lane's PostgreSQL connector: a small process of its own, started by
//! the lane before the lane enters its sandbox, that opens and
//! authenticates connections as the lane's writer role and hands each one
//! to the lane over a message socket (`SCM_RIGHTS`).
//!
//! Why a process: once sandboxed, a lane cannot create a socket or call
//! `connect` at all (neither is on its seccomp allow-list), so code running
//! inside a compromised lane cannot reach PostgreSQL as any other role,
//! even where the lane shares its OS identity with the operator (an
//! appliance started without root, whose user `pg_ident.conf` maps to every
//! role). The connector takes no role, database or socket from the lane:
//! they are fixed by its command line, which the lane's own start-up
//! writes from the supervisor's arguments. It runs as the lane's identity,
//! in a sandbox of its own (no_new_privs, Landlock denying every file and
//! network right, a seccomp allow-list of what a connect needs), and exits
//! when the lane closes its end.
//!
//! Wire (one `SOCK_SEQPACKET` message each way per connection):
//! lane → connector `C`; connector → lane `O` + the bytes already read
//! after ReadyForQuery (normally none) with the connection's descriptor
//! attached, or `E` + an error text of at most [`CONNECTOR_ERROR_BYTES_MAX`].

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use bytes::BytesMut;

use crate::base::limits::PG_SEND_BUFFER_BYTES;
use crate::base::sys::fdpass::{receive_message, send_message};
use crate::pg::{ConnectParams, Connection};

/// A request for a new connection.
pub const REQUEST_CONNECT: u8 = b'C';
/// A connection follows (descriptor attached).
pub const REPLY_CONNECTED: u8 = b'O';
/// The connect failed; an error text follows.
pub const REPLY_FAILED: u8 = b'E';
/// Longest error text a connector sends (longer ones are cut at a char boundary).
pub const CONNECTOR_ERROR_BYTES_MAX: usize = 1024;
/// Largest connector message: a reply byte and the leftover bytes or error text.
pub const CONNECTOR_MESSAGE_BYTES_MAX: usize = 1 + crate::base::limits::PG_READ_BUFFER_BYTES;

/// Session settings of a lane connection, each with its reason: explicit
/// durability for every batch, and bounds on how long a statement, a lock
/// wait or an open transaction may hold the lane.
pub const LANE_SESSION_SQL: &str = "SET synchronous_commit = on; \
     SET statement_timeout = '60s'; \
     SET lock_timeout = '30s'; \
     SET idle_in_transaction_session_timeout = '60s'";

/// What the connector connects to, and as whom: fixed at its start.
#[derive(Clone, Debug)]
pub struct ConnectorArgs {
    /// The connector's own sandbox: the lane's mode.
    pub sandbox: crate::sandbox::SandboxMode,
    pub socket_path: PathBuf,
    pub role: String,
    pub database: String,
    pub application_name: String,
}

impl ConnectorArgs {
    /// The command-line arguments of `applianced lane-connector`.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "lane-connector".into(),
            "--pg-socket".into(),
            self.socket_path.clone().into_os_string(),
            "--role".into(),
            self.role.clone().into(),
            "--database".into(),
            self.database.clone().into(),
            "--application-name".into(),
            self.application_name.clone().into(),
            "--sandbox".into(),
            self.sandbox.name().into(),
        ]
    }
}

/// Open, authenticate and set up one lane connection (blocking, bounded by
/// the wire client's `PG_IO_TIMEOUT_S` per read and write), with a send
/// buffer of `PG_SEND_BUFFER_BYTES` (as far as `net.core.wmem_max` allows).
fn connect(args: &ConnectorArgs) -> Result<(UnixStream, BytesMut), String> {
    let params = ConnectParams {
        socket_path: args.socket_path.clone(),
        user: args.role.clone(),
        database: args.database.clone(),
        password: None,
        application_name: args.application_name.clone(),
    };
    let mut conn = Connection::connect(&params).map_err(|e| e.to_string())?;
    conn.execute(LANE_SESSION_SQL).map_err(|e| e.to_string())?;
    let (stream, leftover) = conn.into_stream().map_err(|e| e.to_string())?;
    // O_NONBLOCK lives in the open file description, which the lane shares.
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    crate::base::sys::set_send_buffer(stream.as_fd(), PG_SEND_BUFFER_BYTES).map_err(|e| format!("SO_SNDBUF: {e}"))?;
    Ok((stream, leftover))
}

fn reply_failed(lane: BorrowedFd<'_>, why: &str) -> std::io::Result<()> {
    let mut end = why.len().min(CONNECTOR_ERROR_BYTES_MAX);
    while !why.is_char_boundary(end) {
        end -= 1;
    }
    let mut message = vec![REPLY_FAILED];
    message.extend_from_slice(&why.as_bytes()[..end]);
    send_message(lane, &message, None)
}

/// Wait until `fd` is readable (or has hung up).
fn wait_readable(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let mut fds = [libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    while crate::base::sys::poll(&mut fds, -1)? == 0 {}
    Ok(())
}

/// The connector's loop: one connection per request, until the lane closes.
pub fn serve(lane: OwnedFd, args: &ConnectorArgs) -> std::io::Result<()> {
    let mut buffer = [0u8; 16];
    loop {
        wait_readable(lane.as_fd())?;
        let Some(request) = receive_message(lane.as_fd(), &mut buffer)? else { continue };
        match &buffer[..request.len] {
            [] => return Ok(()),
            [REQUEST_CONNECT] => match connect(args) {
                Ok((stream, leftover)) if leftover.len() < CONNECTOR_MESSAGE_BYTES_MAX => {
                    let mut message = vec![REPLY_CONNECTED];
                    message.extend_from_slice(&leftover);
                    send_message(lane.as_fd(), &message, Some(stream.as_fd()))?;
                }
                Ok((_, leftover)) => {
                    reply_failed(lane.as_fd(), &format!("{} bytes after ReadyForQuery", leftover.len()))?
                }
                Err(why) => reply_failed(lane.as_fd(), &why)?,
            },
            other => reply_failed(lane.as_fd(), &format!("unknown request of {} bytes", other.len()))?,
        }
    }
}

/// What the lane receives from its connector.
#[derive(Debug)]
pub enum ConnectorReply {
    Connected(UnixStream, BytesMut),
    Failed(String),
    /// The connector exited (its socket closed): the lane cannot reconnect.
    Gone,
}

/// Read one reply, if one is there. A malformed reply is an error.
pub fn receive_reply(connector: BorrowedFd<'_>) -> std::io::Result<Option<ConnectorReply>> {
    let mut buffer = vec![0u8; CONNECTOR_MESSAGE_BYTES_MAX];
    let Some(received) = receive_message(connector, &mut buffer)? else { return Ok(None) };
    let bad = |why: &str| std::io::Error::other(format!("connector reply: {why}"));
    match (buffer[..received.len].split_first(), received.fd) {
        (None, _) => Ok(Some(ConnectorReply::Gone)),
        (Some((&REPLY_CONNECTED, leftover)), Some(fd)) => {
            Ok(Some(ConnectorReply::Connected(UnixStream::from(fd), BytesMut::from(leftover))))
        }
        (Some((&REPLY_FAILED, text)), None) => {
            Ok(Some(ConnectorReply::Failed(String::from_utf8_lossy(text).into_owned())))
        }
        (Some((&REPLY_CONNECTED, _)), None) => Err(bad("no descriptor with the connection")),
        (Some(_), _) => Err(bad("unknown reply")),
    }
}

/// Ask for a new connection.
pub fn request_connection(connector: BorrowedFd<'_>) -> std::io::Result<()> {
    send_message(connector, &[REQUEST_CONNECT], None)
}
