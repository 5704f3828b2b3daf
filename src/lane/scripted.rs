//! A scripted PostgreSQL backend for the lane core's tests and fuzz target
//! (sans-I/O): it reads the frontend bytes the core queues
//! (`take_pg_output`) and answers them on the wire, with the semantics of
//! the lane's SQL that matter to exactly-once delivery:
//! `appliance.watermark_get`, `appliance.watermark_advance` (the same
//! refusals as `sql/0002_appliance.sql`: RE001 out of order, RE002 fenced
//! epoch, 22023 bad range), `appliance.partition_window`, and a
//! transaction (BEGIN, COPY FROM STDIN binary, the tail's quarantine
//! inserts and watermark advances, COMMIT) that is applied whole at COMMIT
//! or not at all. Several connections (sessions) each have their own
//! transaction; a watermark advance is checked against what is committed
//! and its own transaction's advances, so a lane that sent a later
//! transaction's tail before the earlier one committed is refused as a
//! real server would refuse it (or block on the row lock). Faults: the
//! next statement fails with a given SQLSTATE; a connection is lost (its
//! open transaction is rolled back).
//!
//! What it committed (rows, watermarks) is what the checks compare with
//! what producers were acknowledged; every refused watermark advance is
//! kept in `refusals`, which a correct lane never provokes.
//!
//! Compiled for tests and with the `testkit` feature (the fuzz targets);
//! never in a package.

use std::collections::HashMap;

use bytes::{Buf, BufMut, BytesMut};

/// Statements kept in `ScriptedDb::statements`.
pub const LOG_STATEMENTS_MAX: usize = 256;

/// One producer's watermark: (epoch, last seq).
type Mark = (u64, u64);

#[derive(Debug, Default)]
struct Transaction {
    aborted: bool,
    rows: u64,
    marks: HashMap<u64, Mark>,
}

#[derive(Debug, PartialEq, Eq)]
enum Copy {
    Idle,
    /// Inside COPY FROM STDIN: the binary stream so far.
    In(Vec<u8>),
    /// A COPY that failed to start: its CopyData and CopyDone are ignored.
    Ignored,
}

/// The scripted backend of one lane's database.
#[derive(Debug)]
pub struct ScriptedDb {
    /// Committed watermarks per producer.
    pub marks: HashMap<u64, Mark>,
    /// Committed rows, every table (quarantine included).
    pub rows: u64,
    /// Committed transactions.
    pub commits: u64,
    /// The partition window answered, [lo, hi) in Unix µs.
    pub window: (i64, i64),
    /// Watermark advances refused (a duplicate or a gap sent).
    pub refusals: Vec<String>,
    /// Statements it does not know (the lane sent SQL it should not).
    pub unknown: Vec<String>,
    /// The last `LOG_STATEMENTS_MAX` statements received, oldest first.
    pub statements: std::collections::VecDeque<String>,
    /// The session being served (`serve_on` swaps each in from `sessions`).
    transaction: Option<Transaction>,
    copy: Copy,
    fail_next: Option<&'static str>,
    input: BytesMut,
    /// The other connections' sessions, by connection index.
    sessions: Vec<Session>,
}

/// One connection's state while another is served.
#[derive(Debug)]
struct Session {
    transaction: Option<Transaction>,
    copy: Copy,
    input: BytesMut,
}

impl Session {
    fn new() -> Session {
        Session { transaction: None, copy: Copy::Idle, input: BytesMut::new() }
    }
}

impl Default for ScriptedDb {
    fn default() -> Self {
        ScriptedDb::new()
    }
}

impl ScriptedDb {
    pub fn new() -> ScriptedDb {
        ScriptedDb {
            marks: HashMap::new(),
            rows: 0,
            commits: 0,
            window: (0, i64::MAX),
            refusals: Vec::new(),
            unknown: Vec::new(),
            statements: std::collections::VecDeque::new(),
            transaction: None,
            copy: Copy::Idle,
            fail_next: None,
            input: BytesMut::new(),
            sessions: Vec::new(),
        }
    }

    /// Swap connection `conn`'s session in (and the served one out).
    fn swap_session(&mut self, conn: usize) {
        if self.sessions.len() <= conn {
            self.sessions.resize_with(conn + 1, Session::new);
        }
        let session = &mut self.sessions[conn];
        std::mem::swap(&mut self.transaction, &mut session.transaction);
        std::mem::swap(&mut self.copy, &mut session.copy);
        std::mem::swap(&mut self.input, &mut session.input);
    }

    /// `serve` on connection `conn` (0 is the one `serve` uses).
    pub fn serve_on(&mut self, conn: usize, bytes: &[u8]) -> BytesMut {
        if conn == 0 {
            return self.serve(bytes);
        }
        self.swap_session(conn);
        let out = self.serve(bytes);
        self.swap_session(conn);
        out
    }

    /// `connection_lost` on connection `conn`.
    pub fn connection_lost_on(&mut self, conn: usize) {
        if conn == 0 {
            return self.connection_lost();
        }
        self.swap_session(conn);
        self.connection_lost();
        self.swap_session(conn);
    }

    /// The next statement other than BEGIN fails with `sqlstate` (inside a
    /// transaction, the transaction is aborted; a failed COMMIT ends it).
    pub fn fail_next_statement(&mut self, sqlstate: &'static str) {
        self.fail_next = Some(sqlstate);
    }

    /// The connection broke: an open transaction is rolled back, unread
    /// input dropped.
    pub fn connection_lost(&mut self) {
        self.transaction = None;
        self.copy = Copy::Idle;
        self.input.clear();
    }

    /// Whether a transaction is open on any connection (its fate depends
    /// on a COMMIT not yet seen).
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some() || self.sessions.iter().any(|s| s.transaction.is_some())
    }

    /// Consume frontend bytes; return the backend's replies to every
    /// complete message among them.
    pub fn serve(&mut self, bytes: &[u8]) -> BytesMut {
        self.input.extend_from_slice(bytes);
        let mut out = BytesMut::new();
        while self.input.len() >= 5 {
            let tag = self.input[0];
            let len = u32::from_be_bytes([self.input[1], self.input[2], self.input[3], self.input[4]]) as usize;
            if self.input.len() < 1 + len {
                break;
            }
            self.input.advance(5);
            let body = self.input.split_to(len - 4);
            match tag {
                b'Q' => {
                    let sql = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(&body)).into_owned();
                    self.query(&sql, &mut out);
                }
                b'd' => {
                    if let Copy::In(stream) = &mut self.copy {
                        stream.extend_from_slice(&body);
                    }
                }
                b'c' => self.copy_done(&mut out),
                other => self.unknown.push(format!("frontend message {:?}", other as char)),
            }
        }
        out
    }

    fn query(&mut self, sql: &str, out: &mut BytesMut) {
        self.log(sql);
        if let Some(sqlstate) = self.fail_next.take_if(|_| sql != "BEGIN") {
            self.fail(out, sqlstate, "injected failure");
            if sql == "COMMIT" {
                // A failed COMMIT ends the transaction (rolled back).
                self.transaction = None;
            }
            if sql.starts_with("COPY ") {
                self.copy = Copy::Ignored;
            }
            return ready(out, self.status());
        }
        let aborted = self.transaction.as_ref().is_some_and(|t| t.aborted);
        if aborted && sql != "COMMIT" {
            if sql.starts_with("COPY ") {
                self.copy = Copy::Ignored;
            }
            error(out, "25P02", "current transaction is aborted");
            return ready(out, self.status());
        }
        if sql == "BEGIN" {
            self.transaction = Some(Transaction::default());
            complete(out, "BEGIN");
        } else if sql == "COMMIT" {
            match self.transaction.take() {
                Some(t) if !t.aborted => {
                    self.rows += t.rows;
                    self.marks.extend(t.marks);
                    self.commits += 1;
                    complete(out, "COMMIT");
                }
                _ => complete(out, "ROLLBACK"),
            }
        } else if sql.starts_with("COPY ") && self.transaction.is_some() {
            self.copy = Copy::In(Vec::new());
            // CopyInResponse: binary, no per-column formats.
            out.put_u8(b'G');
            out.put_u32(4 + 1 + 2);
            out.put_u8(1);
            out.put_u16(0);
            return;
        } else if let Some(id) = call_arg(sql, "SELECT producer_epoch, last_seq FROM appliance.watermark_get(") {
            match self.marks.get(&id) {
                Some((epoch, seq)) => {
                    data_row(out, &[&epoch.to_string(), &seq.to_string()]);
                    complete(out, "SELECT 1");
                }
                None => complete(out, "SELECT 0"),
            }
        } else if sql == "SELECT lo_us, hi_us FROM appliance.partition_window()" {
            data_row(out, &[&self.window.0.to_string(), &self.window.1.to_string()]);
            complete(out, "SELECT 1");
        } else if self.transaction.is_some() && !sql.trim().is_empty() {
            self.tail(sql, out);
        } else {
            self.unknown.push(sql.to_string());
            error(out, "42601", "statement not scripted");
        }
        ready(out, self.status());
    }

    /// The batch's tail: quarantine inserts and watermark advances, one per line.
    fn tail(&mut self, sql: &str, out: &mut BytesMut) {
        for line in sql.lines().filter(|l| !l.trim().is_empty()) {
            if line.starts_with("INSERT INTO ") {
                if let Some(t) = self.transaction.as_mut() {
                    t.rows += 1;
                }
                complete(out, "INSERT 0 1");
            } else if let Some(args) = call_args(line, "SELECT appliance.watermark_advance(") {
                if let Err((sqlstate, why)) = self.advance(&args) {
                    self.refusals.push(format!("{line}: {why}"));
                    return self.fail(out, sqlstate, &why);
                }
                data_row(out, &[""]);
                complete(out, "SELECT 1");
            } else {
                self.unknown.push(line.to_string());
                return self.fail(out, "42601", "statement not scripted");
            }
        }
    }

    /// `appliance.watermark_advance`, as sql/0002_appliance.sql defines it.
    fn advance(&mut self, args: &[u64]) -> Result<(), (&'static str, String)> {
        let &[producer, epoch, first, last, rows] = args else {
            return Err(("42883", format!("{} arguments", args.len())));
        };
        if first < 1 || last < first || rows > last - first + 1 {
            return Err(("22023", format!("invalid batch range epoch {epoch} seq {first}..{last} rows {rows}")));
        }
        let Some(t) = self.transaction.as_mut() else { return Err(("25001", "no transaction".into())) };
        match t.marks.get(&producer).or_else(|| self.marks.get(&producer)).copied() {
            None if first != 1 => return Err(("RE001", format!("first batch must start at seq 1, got {first}"))),
            Some((e, _)) if epoch < e => return Err(("RE002", format!("epoch {epoch} is fenced by epoch {e}"))),
            Some((e, _)) if epoch > e && first != 1 => {
                return Err(("RE001", format!("new epoch {epoch} must start at seq 1, got {first}")));
            }
            Some((e, l)) if epoch == e && first != l + 1 => {
                return Err(("RE001", format!("batch starts at {first}, watermark is {l}")));
            }
            _ => {}
        }
        t.marks.insert(producer, (epoch, last));
        Ok(())
    }

    fn copy_done(&mut self, out: &mut BytesMut) {
        match std::mem::replace(&mut self.copy, Copy::Idle) {
            Copy::In(stream) => match copy_rows(&stream) {
                Ok(rows) => {
                    if let Some(t) = self.transaction.as_mut() {
                        t.rows += rows;
                    }
                    complete(out, &format!("COPY {rows}"));
                }
                Err(why) => self.fail(out, "22P04", why),
            },
            Copy::Idle => return self.unknown.push("CopyDone outside COPY".into()),
            Copy::Ignored => return,
        }
        ready(out, self.status());
    }

    fn fail(&mut self, out: &mut BytesMut, sqlstate: &str, message: &str) {
        if let Some(t) = self.transaction.as_mut() {
            t.aborted = true;
        }
        error(out, sqlstate, message);
    }

    fn log(&mut self, sql: &str) {
        if self.statements.len() == LOG_STATEMENTS_MAX {
            self.statements.pop_front();
        }
        self.statements.push_back(sql.to_string());
    }

    fn status(&self) -> u8 {
        match &self.transaction {
            None => b'I',
            Some(t) if t.aborted => b'E',
            Some(_) => b'T',
        }
    }
}

/// The rows of a binary COPY stream (header, tuples, trailer).
fn copy_rows(stream: &[u8]) -> Result<u64, &'static str> {
    const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
    let mut at = stream.strip_prefix(SIGNATURE).ok_or("COPY signature missing")?;
    let word = |at: &mut &[u8], n: usize| -> Result<u64, &'static str> {
        if at.len() < n {
            return Err("COPY stream truncated");
        }
        let (head, rest) = at.split_at(n);
        *at = rest;
        Ok(head.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)))
    };
    word(&mut at, 4)?;
    let extension = word(&mut at, 4)? as usize;
    at = at.get(extension..).ok_or("COPY header extension truncated")?;
    let mut rows = 0;
    loop {
        let fields = word(&mut at, 2)?;
        if fields == 0xffff {
            return if at.is_empty() { Ok(rows) } else { Err("bytes after the COPY trailer") };
        }
        for _ in 0..fields {
            let len = word(&mut at, 4)?;
            if len != 0xffff_ffff {
                at = at.get(len as usize..).ok_or("COPY field truncated")?;
            }
        }
        rows += 1;
    }
}

fn call_arg(sql: &str, prefix: &str) -> Option<u64> {
    match call_args(sql, prefix)?.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// The integer arguments of `prefix ... )`.
fn call_args(sql: &str, prefix: &str) -> Option<Vec<u64>> {
    let rest = sql.strip_prefix(prefix)?;
    let inner = &rest[..rest.find(')')?];
    inner.split(',').map(|a| a.trim().parse().ok()).collect()
}

fn message(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_u32(4 + body.len() as u32);
    out.put_slice(body);
}

fn complete(out: &mut BytesMut, tag: &str) {
    message(out, b'C', &[tag.as_bytes(), &[0]].concat());
}

fn ready(out: &mut BytesMut, status: u8) {
    message(out, b'Z', &[status]);
}

fn data_row(out: &mut BytesMut, fields: &[&str]) {
    let mut body = BytesMut::new();
    body.put_u16(fields.len() as u16);
    for field in fields {
        body.put_u32(field.len() as u32);
        body.put_slice(field.as_bytes());
    }
    message(out, b'D', &body);
}

fn error(out: &mut BytesMut, sqlstate: &str, text: &str) {
    let mut body = Vec::new();
    for (field, value) in [(b'S', "ERROR"), (b'V', "ERROR"), (b'C', sqlstate), (b'M', text)] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    message(out, b'E', &body);
}
