//! The module client library: how a RansomEye module hands events to its
//! lane. Blocking, one connection, used by the load client and by tests.
//!
//! Connects to the module's abstract socket, verifies by SO_PEERCRED that
//! the server is owned by the expected uid (a squatter gets no byte),
//! performs the handshake, and then sends EVENTS within the credit the
//! lane grants, collecting ACK, CREDIT, REJECT and ERROR frames.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::time::Duration;

use bytes::BytesMut;

use crate::base::sys;
use crate::codec::frame::module_code;
use crate::codec::frame::{self, ErrorCode, Frame, FrameError, Kind};
use crate::model::matrix::Module;

/// How long a client waits for any reply before giving up on a connection.
pub const CLIENT_REPLY_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug)]
pub enum ClientError {
    Connect(std::io::Error),
    /// The socket is bound by someone other than the expected server.
    UntrustedServer {
        expected_uid: u32,
        found_uid: u32,
        pid: i32,
    },
    Io(std::io::Error),
    Protocol(FrameError),
    /// The lane sent ERROR and closed.
    Refused {
        code: u16,
        reason: String,
    },
    /// The lane closed before WELCOME without a word: this peer is not
    /// admitted on this lane (or the lane is full or draining).
    ClosedDuringHandshake,
    Closed,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "connect: {e}"),
            ClientError::UntrustedServer { expected_uid, found_uid, pid } => write!(
                f,
                "refusing to send: the socket is bound by uid {found_uid} (pid {pid}), expected uid {expected_uid}"
            ),
            ClientError::Io(e) => write!(f, "socket: {e}"),
            ClientError::Protocol(e) => write!(f, "protocol: {e}"),
            ClientError::Refused { code, reason } => write!(f, "lane error {code}: {reason}"),
            ClientError::ClosedDuringHandshake => {
                write!(f, "the lane closed the connection before WELCOME (peer not admitted on this lane?)")
            }
            ClientError::Closed => write!(f, "the lane closed the connection"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A reply from the lane.
#[derive(Debug)]
pub enum Reply {
    Ack {
        epoch: u64,
        durable_seq: u64,
    },
    Credit(u32),
    Reject {
        seq: u64,
        code: u16,
        reason: String,
    },
    /// The lane's explicit push-back (or its end): wait for credit.
    Status {
        code: u16,
        reason: String,
    },
}

/// An open, handshaken connection to a lane.
pub struct ModuleClient {
    stream: UnixStream,
    inbuf: BytesMut,
    out: BytesMut,
    pub credit_bytes: u64,
    pub watermark_epoch: u64,
    pub watermark_seq: u64,
}

/// A WELCOME below what this producer was already acknowledged (same
/// epoch): the appliance lost acknowledged events; returns the lost seqs
/// `(first, last)`. A producer MUST report this (PROTOCOL.md §4.2), and
/// resend those events if it still holds them.
pub fn welcome_regression(welcome: (u64, u64), acked: (u64, u64)) -> Option<(u64, u64)> {
    let ((welcome_epoch, welcome_seq), (acked_epoch, acked_seq)) = (welcome, acked);
    (welcome_epoch == acked_epoch && welcome_seq < acked_seq).then_some((welcome_seq + 1, acked_seq))
}

/// ERROR codes after which reconnecting with the same HELLO or frames
/// cannot help (PROTOCOL.md §11.1): a fenced epoch, the wrong module, a
/// gap the producer would cause, a producer id not granted to its uid.
pub fn is_final(code: u16) -> bool {
    [ErrorCode::EpochFenced, ErrorCode::WrongModule, ErrorCode::SequenceGap, ErrorCode::ProducerNotAllowed]
        .iter()
        .any(|c| *c as u16 == code)
}

/// The abstract socket address of a module's lane.
pub fn lane_address(instance: &str, module: Module) -> std::io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(module.socket_name(instance).as_bytes())
}

/// Connect to the abstract socket `name` and accept it only if the uid
/// that bound it is `server_uid` (SO_PEERCRED, before reading a byte).
pub fn connect_verified(name: &str, server_uid: u32) -> Result<UnixStream, ClientError> {
    let address = SocketAddr::from_abstract_name(name.as_bytes()).map_err(ClientError::Connect)?;
    let stream = UnixStream::connect_addr(&address).map_err(ClientError::Connect)?;
    let server = sys::peer_credentials(stream.as_fd()).map_err(ClientError::Io)?;
    if server.uid != server_uid {
        return Err(ClientError::UntrustedServer { expected_uid: server_uid, found_uid: server.uid, pid: server.pid });
    }
    Ok(stream)
}

impl std::os::fd::AsRawFd for ModuleClient {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.stream.as_raw_fd()
    }
}

impl ModuleClient {
    /// Connect, verify the server's uid, send HELLO and wait for WELCOME.
    pub fn connect(
        instance: &str,
        module: Module,
        server_uid: u32,
        producer_id: u64,
        epoch: u64,
    ) -> Result<ModuleClient, ClientError> {
        let stream = connect_verified(&module.socket_name(instance), server_uid)?;
        stream.set_read_timeout(Some(Duration::from_millis(CLIENT_REPLY_TIMEOUT_MS))).map_err(ClientError::Io)?;
        let mut client = ModuleClient {
            stream,
            inbuf: BytesMut::new(),
            out: BytesMut::new(),
            credit_bytes: 0,
            watermark_epoch: 0,
            watermark_seq: 0,
        };
        frame::encode_hello(&mut client.out, module_code(module), producer_id, epoch);
        // A lane that does not admit this peer closes at once: the HELLO
        // write may then fail (EPIPE, ECONNRESET) or the read see EOF.
        let handshake = |e: ClientError| match e {
            ClientError::Closed => ClientError::ClosedDuringHandshake,
            ClientError::Io(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {
                ClientError::ClosedDuringHandshake
            }
            other => other,
        };
        client.flush().map_err(handshake)?;
        let welcome = client.read_frame().map_err(handshake)?;
        if welcome.kind != Kind::Welcome {
            return Err(ClientError::Protocol(FrameError::new(
                frame::ErrorCode::HandshakeRequired,
                format!("expected WELCOME, got {:?}", welcome.kind),
            )));
        }
        let body = frame::decode_welcome(&welcome.body).map_err(ClientError::Protocol)?;
        client.credit_bytes = u64::from(body.credit_bytes.get());
        client.watermark_epoch = body.watermark_epoch.get();
        client.watermark_seq = body.watermark_seq.get();
        Ok(client)
    }

    fn flush(&mut self) -> Result<(), ClientError> {
        self.stream.write_all(&self.out).map_err(ClientError::Io)?;
        self.out.clear();
        Ok(())
    }

    fn read_frame(&mut self) -> Result<Frame, ClientError> {
        loop {
            if let Some(frame) = frame::decode_frame(&mut self.inbuf).map_err(ClientError::Protocol)? {
                if frame.kind == Kind::Error {
                    let (code, reason) = frame::decode_error(&frame.body).map_err(ClientError::Protocol)?;
                    return Err(ClientError::Refused { code, reason });
                }
                return Ok(frame);
            }
            let mut buffer = [0u8; 64 * 1024];
            let n = self.stream.read(&mut buffer).map_err(ClientError::Io)?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.inbuf.extend_from_slice(&buffer[..n]);
        }
    }

    /// Send one EVENTS frame whose body was built with
    /// [`frame::encode_events_header`] and [`frame::encode_record`]. The
    /// caller must hold enough credit for `body`.
    pub fn send_events(&mut self, body: &[u8]) -> Result<(), ClientError> {
        debug_assert!(body.len() as u64 <= self.credit_bytes);
        self.credit_bytes -= body.len() as u64;
        frame::encode_frame(&mut self.out, Kind::Events, body);
        self.flush()
    }

    /// Queue one EVENTS frame without sending it (see [`Self::send_queued`]);
    /// the caller must hold enough credit for `body`, which bounds what waits.
    pub fn queue_events(&mut self, body: &[u8]) {
        debug_assert!(body.len() as u64 <= self.credit_bytes);
        self.credit_bytes -= body.len() as u64;
        frame::encode_frame(&mut self.out, Kind::Events, body);
    }

    /// Send what the socket takes now of the queued frames; returns the
    /// bytes still waiting (0: all sent).
    pub fn send_queued(&mut self) -> Result<usize, ClientError> {
        while !self.out.is_empty() {
            let sent = sys::send_nowait(self.stream.as_fd(), &self.out).map_err(ClientError::Io)?;
            if sent == 0 {
                break;
            }
            let _ = self.out.split_to(sent);
        }
        Ok(self.out.len())
    }

    /// Bytes of queued frames not yet sent.
    pub fn queued_bytes(&self) -> usize {
        self.out.len()
    }

    /// Send raw bytes (tests of malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).map_err(ClientError::Io)
    }

    /// Wait up to `timeout` for replies (zero: only take those already
    /// there); returns those that arrived.
    pub fn poll_replies(&mut self, timeout: Duration) -> Result<Vec<Reply>, ClientError> {
        let mut replies = Vec::new();
        // A zero timeout only takes what is there; so does every read after the first.
        let mut waited = timeout.is_zero();
        loop {
            while let Some(frame) = frame::decode_frame(&mut self.inbuf).map_err(ClientError::Protocol)? {
                replies.push(self.decode_reply(frame)?);
            }
            if !replies.is_empty() {
                return Ok(replies);
            }
            let mut buffer = [0u8; 64 * 1024];
            let read = if waited {
                match sys::fdpass::receive_message(self.stream.as_fd(), &mut buffer).map_err(ClientError::Io)? {
                    None => return Ok(replies),
                    Some(received) => received.len,
                }
            } else {
                waited = true;
                self.stream.set_read_timeout(Some(timeout)).map_err(ClientError::Io)?;
                match self.stream.read(&mut buffer) {
                    Ok(n) => n,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Ok(replies),
                    Err(e) => return Err(ClientError::Io(e)),
                }
            };
            if read == 0 {
                return Err(ClientError::Closed);
            }
            self.inbuf.extend_from_slice(&buffer[..read]);
        }
    }

    fn decode_reply(&mut self, frame: Frame) -> Result<Reply, ClientError> {
        match frame.kind {
            Kind::Ack => {
                let ack = frame::decode_ack(&frame.body).map_err(ClientError::Protocol)?;
                Ok(Reply::Ack { epoch: ack.epoch.get(), durable_seq: ack.durable_seq.get() })
            }
            Kind::Credit => {
                let credit = frame::decode_credit(&frame.body).map_err(ClientError::Protocol)?.credit_bytes.get();
                self.credit_bytes += u64::from(credit);
                Ok(Reply::Credit(credit))
            }
            Kind::Reject => {
                let (head, reason) = frame::decode_reject(&frame.body).map_err(ClientError::Protocol)?;
                Ok(Reply::Reject { seq: head.seq.get(), code: head.code.get(), reason })
            }
            Kind::Error => {
                let (code, reason) = frame::decode_error(&frame.body).map_err(ClientError::Protocol)?;
                Err(ClientError::Refused { code, reason })
            }
            Kind::Status => {
                let (code, reason) = frame::decode_error(&frame.body).map_err(ClientError::Protocol)?;
                Ok(Reply::Status { code, reason })
            }
            other => Err(ClientError::Protocol(FrameError::new(
                frame::ErrorCode::UnknownKind,
                format!("{other:?} from the lane"),
            ))),
        }
    }
}
