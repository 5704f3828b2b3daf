//! A blocking PostgreSQL connection over a Unix socket.
//!
//! Startup and authentication, then the simple-query protocol. Used by the
//! control paths (`init`, `selftest`, tests); every byte goes through the
//! sans-I/O decoder in [`super::wire`].

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::wire::{PgError, Row, decode_data_row, decode_error_fields, decode_message};
use crate::base::limits::{PG_IO_TIMEOUT_S, PG_READ_BUFFER_BYTES, PG_RESULT_ROWS_MAX};

/// CopyData message size: 256 KiB, as in the feasibility study's COPY path.
const COPY_DATA_CHUNK_BYTES: usize = 256 * 1024;

/// Where and as whom to connect.
#[derive(Clone, Debug)]
pub struct ConnectParams {
    /// Full path of the server socket, e.g. `<state>/run/.s.PGSQL.5432`.
    pub socket_path: PathBuf,
    pub user: String,
    pub database: String,
    /// Only used if the server asks for SCRAM-SHA-256.
    pub password: Option<String>,
    pub application_name: String,
}

/// An open, authenticated connection.
pub struct Connection {
    stream: UnixStream,
    read_buf: BytesMut,
    write_buf: BytesMut,
    backend_pid: i32,
    terminate_on_drop: bool,
}

fn io_error(step: &'static str) -> impl FnOnce(std::io::Error) -> PgError {
    move |source| PgError::Io { step, source }
}

impl Connection {
    /// Connect, authenticate and wait for the first ReadyForQuery.
    pub fn connect(params: &ConnectParams) -> Result<Connection, PgError> {
        let stream = UnixStream::connect(&params.socket_path).map_err(io_error("connect"))?;
        let timeout = Some(Duration::from_secs(PG_IO_TIMEOUT_S));
        stream.set_read_timeout(timeout).map_err(io_error("set read timeout"))?;
        stream.set_write_timeout(timeout).map_err(io_error("set write timeout"))?;
        let mut conn = Connection {
            stream,
            read_buf: BytesMut::with_capacity(PG_READ_BUFFER_BYTES),
            write_buf: BytesMut::with_capacity(PG_READ_BUFFER_BYTES),
            backend_pid: 0,
            terminate_on_drop: true,
        };
        let startup = [
            ("user", params.user.as_str()),
            ("database", params.database.as_str()),
            ("application_name", params.application_name.as_str()),
            ("client_encoding", "UTF8"),
        ];
        frontend::startup_message(startup.iter().copied(), &mut conn.write_buf).map_err(io_error("encode startup"))?;
        conn.flush()?;
        conn.authenticate(params.password.as_deref())?;
        conn.wait_ready()?;
        Ok(conn)
    }

    /// Process id of the server backend (for logs and `pg_terminate_backend`).
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    fn flush(&mut self) -> Result<(), PgError> {
        self.stream.write_all(&self.write_buf).map_err(io_error("write"))?;
        self.write_buf.clear();
        Ok(())
    }

    fn read_message(&mut self) -> Result<Message, PgError> {
        loop {
            if let Some(message) = decode_message(&mut self.read_buf)? {
                return Ok(message);
            }
            let start = self.read_buf.len();
            self.read_buf.resize(start + PG_READ_BUFFER_BYTES, 0);
            let read = self.stream.read(&mut self.read_buf[start..]);
            let n = match read {
                Ok(n) => n,
                Err(e) => {
                    self.read_buf.truncate(start);
                    return Err(PgError::Io { step: "read", source: e });
                }
            };
            self.read_buf.truncate(start + n);
            if n == 0 {
                return Err(PgError::Protocol("server closed the connection".into()));
            }
        }
    }

    fn authenticate(&mut self, password: Option<&str>) -> Result<(), PgError> {
        match self.read_message()? {
            Message::AuthenticationOk => Ok(()),
            Message::AuthenticationSasl(body) => {
                let mut mechanisms = body.mechanisms();
                let mut scram_offered = false;
                while let Some(m) = mechanisms.next().map_err(io_error("sasl mechanisms"))? {
                    scram_offered |= m == SCRAM_SHA_256;
                }
                if !scram_offered {
                    return Err(PgError::UnsupportedAuth("SASL without SCRAM-SHA-256"));
                }
                let password =
                    password.ok_or(PgError::UnsupportedAuth("SCRAM-SHA-256 without a configured password"))?;
                self.scram(password)
            }
            Message::AuthenticationMd5Password(_) => Err(PgError::UnsupportedAuth("MD5")),
            Message::AuthenticationCleartextPassword => Err(PgError::UnsupportedAuth("cleartext password")),
            Message::ErrorResponse(body) => Err(PgError::Server(decode_error_fields(body.fields())?)),
            _ => Err(PgError::Protocol("unexpected message during authentication".into())),
        }
    }

    fn scram(&mut self, password: &str) -> Result<(), PgError> {
        // Unix sockets carry no TLS, so there is no channel to bind to.
        let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut self.write_buf)
            .map_err(io_error("encode sasl"))?;
        self.flush()?;
        loop {
            match self.read_message()? {
                Message::AuthenticationSaslContinue(body) => {
                    scram.update(body.data()).map_err(io_error("scram update"))?;
                    frontend::sasl_response(scram.message(), &mut self.write_buf).map_err(io_error("encode sasl"))?;
                    self.flush()?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    scram.finish(body.data()).map_err(io_error("scram verify server"))?;
                }
                Message::AuthenticationOk => return Ok(()),
                Message::ErrorResponse(body) => {
                    return Err(PgError::Server(decode_error_fields(body.fields())?));
                }
                _ => return Err(PgError::Protocol("unexpected message during SCRAM".into())),
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), PgError> {
        loop {
            match self.read_message()? {
                Message::ReadyForQuery(_) => return Ok(()),
                Message::BackendKeyData(body) => self.backend_pid = body.process_id(),
                Message::ParameterStatus(_) | Message::NoticeResponse(_) => {}
                Message::ErrorResponse(body) => {
                    return Err(PgError::Server(decode_error_fields(body.fields())?));
                }
                _ => {
                    return Err(PgError::Protocol("unexpected message before ReadyForQuery".into()));
                }
            }
        }
    }

    /// Run one simple-query string (possibly several statements) and return
    /// every data row. On an ErrorResponse the rest of the string is
    /// skipped by the server; the error is returned after ReadyForQuery.
    pub fn simple_query(&mut self, sql: &str) -> Result<Vec<Row>, PgError> {
        frontend::query(sql, &mut self.write_buf).map_err(io_error("encode query"))?;
        self.flush()?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.read_message()? {
                Message::DataRow(body) => {
                    if rows.len() >= PG_RESULT_ROWS_MAX {
                        return Err(PgError::Protocol(format!("more than {PG_RESULT_ROWS_MAX} rows")));
                    }
                    rows.push(decode_data_row(&body)?);
                }
                Message::ErrorResponse(body) => error = Some(decode_error_fields(body.fields())?),
                Message::ReadyForQuery(_) => break,
                Message::RowDescription(_)
                | Message::CommandComplete(_)
                | Message::EmptyQueryResponse
                | Message::NoticeResponse(_)
                | Message::ParameterStatus(_) => {}
                _ => {
                    return Err(PgError::Protocol("unexpected message in simple query".into()));
                }
            }
        }
        match error {
            Some(e) => Err(PgError::Server(e)),
            None => Ok(rows),
        }
    }

    /// `COPY ... FROM STDIN` with `data` as the whole COPY stream; returns
    /// the row count from the CommandComplete tag.
    pub fn copy_in(&mut self, statement: &str, data: &[u8]) -> Result<u64, PgError> {
        frontend::query(statement, &mut self.write_buf).map_err(io_error("encode query"))?;
        self.flush()?;
        match self.read_message()? {
            Message::CopyInResponse(_) => {}
            Message::ErrorResponse(body) => {
                let error = decode_error_fields(body.fields())?;
                self.wait_ready()?;
                return Err(PgError::Server(error));
            }
            _ => return Err(PgError::Protocol("expected CopyInResponse".into())),
        }
        for chunk in data.chunks(COPY_DATA_CHUNK_BYTES) {
            frontend::CopyData::new(chunk).map_err(io_error("encode copy data"))?.write(&mut self.write_buf);
            self.flush()?;
        }
        frontend::copy_done(&mut self.write_buf);
        self.flush()?;
        let mut rows = None;
        let mut error = None;
        loop {
            match self.read_message()? {
                Message::CommandComplete(body) => {
                    let tag = body.tag().map_err(io_error("command tag"))?;
                    rows = tag.strip_prefix("COPY ").and_then(|n| n.parse().ok());
                }
                Message::ErrorResponse(body) => error = Some(decode_error_fields(body.fields())?),
                Message::ReadyForQuery(_) => break,
                Message::NoticeResponse(_) => {}
                _ => return Err(PgError::Protocol("unexpected message after CopyDone".into())),
            }
        }
        match (error, rows) {
            (Some(e), _) => Err(PgError::Server(e)),
            (None, Some(rows)) => Ok(rows),
            (None, None) => Err(PgError::Protocol("COPY completed without a row count".into())),
        }
    }

    /// Run statements whose rows are not needed.
    pub fn execute(&mut self, sql: &str) -> Result<(), PgError> {
        self.simple_query(sql).map(|_| ())
    }

    /// Run a query expected to return exactly one non-null value.
    pub fn query_value(&mut self, sql: &str) -> Result<String, PgError> {
        self.query_nullable_value(sql)?
            .ok_or_else(|| PgError::Protocol(format!("expected one non-null column from: {sql}")))
    }

    /// Run a query expected to return exactly one row of one column, which may be NULL (`None`).
    pub fn query_nullable_value(&mut self, sql: &str) -> Result<Option<String>, PgError> {
        let rows = self.simple_query(sql)?;
        match rows.as_slice() {
            [row] => match row.as_slice() {
                [value] => Ok(value.clone()),
                _ => Err(PgError::Protocol(format!("expected one column, got {} from: {sql}", row.len()))),
            },
            _ => Err(PgError::Protocol(format!("expected one row, got {} from: {sql}", rows.len()))),
        }
    }
}

impl Connection {
    /// Hand the authenticated socket (and any bytes already read) to an
    /// event loop. The connection must be idle (after ReadyForQuery).
    pub fn into_stream(mut self) -> Result<(UnixStream, BytesMut), PgError> {
        let stream = self.stream.try_clone().map_err(io_error("duplicate socket"))?;
        self.terminate_on_drop = false;
        let leftover = std::mem::take(&mut self.read_buf);
        Ok((stream, leftover))
    }

    /// The reverse of [`Connection::into_stream`]: an idle, authenticated
    /// socket handed over by another process, used blocking again (no
    /// timeouts are set: a sandboxed lane may not call setsockopt).
    pub fn from_stream(stream: UnixStream, leftover: BytesMut) -> Result<Connection, PgError> {
        stream.set_nonblocking(false).map_err(io_error("make blocking"))?;
        let mut read_buf = BytesMut::with_capacity(PG_READ_BUFFER_BYTES);
        read_buf.extend_from_slice(&leftover);
        Ok(Connection {
            stream,
            read_buf,
            write_buf: BytesMut::with_capacity(PG_READ_BUFFER_BYTES),
            backend_pid: 0,
            terminate_on_drop: true,
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if !self.terminate_on_drop {
            return;
        }
        self.write_buf.clear();
        frontend::terminate(&mut self.write_buf);
        // Best effort: the server also cleans up when the socket closes.
        let _ = self.stream.write_all(&self.write_buf);
    }
}
