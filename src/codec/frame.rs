//! Protocol v1 between a module and its lane: frame codec (sans-I/O).
//!
//! Consumes bytes from a client socket in a `BytesMut`; produces typed
//! frames, and encodes the server's frames into a `BytesMut`. Specified
//! byte by byte in `hardening/PROTOCOL.md`. Every integer is big-endian.
//! Every length is checked against its cap before any body byte is
//! buffered (STYLE S7); a malformed frame is an error value, never a panic.
//! Runs in the lane process, on untrusted input.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use zerocopy::big_endian::{I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::base::limits::{FRAME_BODY_BYTES_MAX, FRAME_EVENTS_MAX, REASON_BYTES_MAX, RECORD_BYTES_MAX};

/// "RE", first two bytes of every frame.
pub const MAGIC: u16 = 0x5245;
pub const VERSION: u8 = 1;

/// The 16-byte header in front of every frame.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct FrameHeader {
    pub magic: U16,
    pub version: u8,
    pub kind: u8,
    pub flags: U16,
    pub reserved: U16,
    pub body_len: U32,
    /// CRC32C (Castagnoli) of the body.
    pub body_crc32c: U32,
}
pub const HEADER_BYTES: usize = size_of::<FrameHeader>();

/// Frame kinds. 1 and 3 flow from producer to lane, the rest back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    Welcome = 2,
    Events = 3,
    Ack = 4,
    Credit = 5,
    Reject = 6,
    Error = 7,
    Status = 8,
}

impl Kind {
    pub fn from_u8(value: u8) -> Option<Kind> {
        match value {
            1 => Some(Kind::Hello),
            2 => Some(Kind::Welcome),
            3 => Some(Kind::Events),
            4 => Some(Kind::Ack),
            5 => Some(Kind::Credit),
            6 => Some(Kind::Reject),
            7 => Some(Kind::Error),
            8 => Some(Kind::Status),
            _ => None,
        }
    }
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct HelloBody {
    /// Module code: 1 core, 2 dpi, 3 linux_agent, 4 windows_agent.
    pub module: u8,
    pub reserved: [u8; 7],
    pub producer_id: U64,
    pub producer_epoch: U64,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct WelcomeBody {
    /// The producer's acknowledged position: epoch and highest seq durable in
    /// the lane's spool or committed in PostgreSQL (0: none).
    pub watermark_epoch: U64,
    pub watermark_seq: U64,
    /// Initial credit, in EVENTS body bytes.
    pub credit_bytes: U32,
    pub reserved: U32,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct EventsHeader {
    /// Sequence number of the first record; record i has first_seq + i.
    pub first_seq: U64,
    pub count: U32,
    pub reserved: U32,
}

/// Bytes of an EVENTS body before its first record.
pub const EVENTS_HEADER_BYTES: usize = size_of::<EventsHeader>();

/// Header of one event record inside an EVENTS body.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct RecordHeader {
    /// Bytes of the record after this field (28 + fields).
    pub record_len: U32,
    /// Index of the table in the module's table list (src/model/schema.rs order).
    pub table: u8,
    pub reserved: u8,
    pub field_count: U16,
    pub source_id: [u8; 16],
    /// Microseconds since 1970-01-01 00:00:00 UTC, as the producer's clock says.
    pub event_time_us: I64,
}
pub const RECORD_HEADER_BYTES: usize = size_of::<RecordHeader>();

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct AckBody {
    pub epoch: U64,
    /// Every seq at or below this is durable: fdatasync'd in the lane's spool
    /// (committed into PostgreSQL, as a row or a quarantine row, in spool order).
    pub durable_seq: U64,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct CreditBody {
    pub credit_bytes: U32,
    pub reserved: U32,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct RejectBody {
    pub epoch: U64,
    pub seq: U64,
    pub code: U16,
    pub reason_len: U16,
    pub reserved: U32,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct ErrorBody {
    pub code: U16,
    pub reason_len: U16,
    pub reserved: U32,
}

/// Codes of ERROR frames (the connection closes after one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    BadMagic = 1,
    UnsupportedVersion = 2,
    UnknownKind = 3,
    NonZeroReserved = 4,
    FrameTooLarge = 5,
    BadChecksum = 6,
    Malformed = 7,
    HandshakeRequired = 8,
    WrongModule = 9,
    SequenceGap = 10,
    SequenceRegression = 11,
    EpochFenced = 12,
    CreditExceeded = 13,
    FieldCount = 14,
    PeerNotAllowed = 15,
    LaneFull = 16,
    Internal = 17,
    /// HELLO named a producer id that no grant of this peer's uid or gid covers.
    ProducerNotAllowed = 18,
    /// HELLO did not arrive within `HANDSHAKE_TIMEOUT_MS`, or the connection
    /// was idle for `CONNECTION_IDLE_TIMEOUT_MS`.
    Timeout = 19,
    /// The producer does not read its replies: more than
    /// `CONNECTION_OUTPUT_BYTES_MAX` of them are queued.
    NotReading = 20,
    /// Every slot was taken and this idle connection's slot was given to a
    /// new connection.
    Evicted = 21,
}

/// Codes of STATUS frames: a lane's explicit push-back (the connection
/// stays open; credit resumes when the condition clears).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum StatusCode {
    /// The spool's disk quota is reached: no credit until commits free space.
    SpoolFull = 1,
    /// Writing the spool failed (disk full, file size limit): no credit; retried.
    SpoolUnwritable = 2,
    /// The condition reported before has cleared; credit follows.
    Resumed = 3,
    /// Acknowledged events of this producer were lost (their spool record
    /// was damaged on disk); the reason names the range. Recorded in the
    /// module's quarantine table with reason code 10. Sent once per range,
    /// after the loss is recorded.
    AcknowledgedLost = 4,
    /// The spool's filesystem is below its free-space reserve (kept so
    /// PostgreSQL, on the same filesystem, can commit what is spooled): no
    /// credit until space is freed; `Resumed` follows.
    DiskReserve = 5,
}

impl StatusCode {
    pub fn from_u16(value: u16) -> Option<StatusCode> {
        match value {
            1 => Some(StatusCode::SpoolFull),
            2 => Some(StatusCode::SpoolUnwritable),
            3 => Some(StatusCode::Resumed),
            4 => Some(StatusCode::AcknowledgedLost),
            5 => Some(StatusCode::DiskReserve),
            _ => None,
        }
    }
}

/// Codes of REJECT frames (one invalid event; the connection stays open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum RejectCode {
    UnknownTable = 1,
    NullInNotNull = 2,
    FieldLength = 3,
    TextNotUtf8 = 4,
    TextHasNul = 5,
    ValueTooLong = 6,
    TimestampRange = 7,
    BadInet = 8,
    NotFinite = 9,
    /// Never sent on the wire: quarantine rows for seqs lost to a
    /// corrupted spool record.
    SpoolRecordCorrupted = 10,
    /// Never sent on the wire: quarantine rows for events whose
    /// ingest_time fell outside every partition window when committed.
    PartitionWindow = 11,
}

impl RejectCode {
    pub fn from_u16(value: u16) -> Option<RejectCode> {
        use RejectCode::*;
        [
            UnknownTable,
            NullInNotNull,
            FieldLength,
            TextNotUtf8,
            TextHasNul,
            ValueTooLong,
            TimestampRange,
            BadInet,
            NotFinite,
            SpoolRecordCorrupted,
            PartitionWindow,
        ]
        .into_iter()
        .find(|code| *code as u16 == value)
    }
}

/// A decoding failure: the connection gets an ERROR frame with this code and closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub reason: String,
}

impl FrameError {
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> FrameError {
        FrameError { code, reason: reason.into() }
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.reason)
    }
}

impl std::error::Error for FrameError {}

/// One complete, checksum-verified frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: Kind,
    pub body: Bytes,
}

/// Decode the next frame from `buf`. `Ok(None)` means more bytes are needed.
/// The header is validated as soon as its 16 bytes are present, so an
/// oversize or bogus frame is refused before its body is read.
pub fn decode_frame(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    let Ok((header, _)) = FrameHeader::read_from_prefix(&buf[..]) else {
        return Ok(None);
    };
    if header.magic.get() != MAGIC {
        return Err(FrameError::new(ErrorCode::BadMagic, format!("magic {:#06x}", header.magic.get())));
    }
    if header.version != VERSION {
        return Err(FrameError::new(
            ErrorCode::UnsupportedVersion,
            format!("version {} (this lane speaks {VERSION})", header.version),
        ));
    }
    let kind = Kind::from_u8(header.kind)
        .ok_or_else(|| FrameError::new(ErrorCode::UnknownKind, format!("kind {}", header.kind)))?;
    if header.flags.get() != 0 || header.reserved.get() != 0 {
        return Err(FrameError::new(ErrorCode::NonZeroReserved, "flags and reserved must be zero"));
    }
    let body_len = header.body_len.get() as usize;
    if body_len > FRAME_BODY_BYTES_MAX {
        return Err(FrameError::new(
            ErrorCode::FrameTooLarge,
            format!("body of {body_len} bytes exceeds {FRAME_BODY_BYTES_MAX}"),
        ));
    }
    if buf.len() < HEADER_BYTES + body_len {
        return Ok(None);
    }
    buf.advance(HEADER_BYTES);
    let body = buf.split_to(body_len).freeze();
    let crc = crc32c::crc32c(&body);
    if crc != header.body_crc32c.get() {
        return Err(FrameError::new(
            ErrorCode::BadChecksum,
            format!("crc32c {crc:#010x}, header says {:#010x}", header.body_crc32c.get()),
        ));
    }
    Ok(Some(Frame { kind, body }))
}

/// The kind byte and body length a frame header at the start of `buf`
/// announces, once its 16 bytes are there and its magic and version are
/// right (a wrong magic or version is `decode_frame`'s to report).
pub fn peek_header(buf: &[u8]) -> Option<(u8, usize)> {
    let (header, _) = FrameHeader::read_from_prefix(buf).ok()?;
    (header.magic.get() == MAGIC && header.version == VERSION).then_some((header.kind, header.body_len.get() as usize))
}

/// Append a frame with `body` to `out`.
pub fn encode_frame(out: &mut BytesMut, kind: Kind, body: &[u8]) {
    debug_assert!(body.len() <= FRAME_BODY_BYTES_MAX);
    let header = FrameHeader {
        magic: U16::new(MAGIC),
        version: VERSION,
        kind: kind as u8,
        flags: U16::new(0),
        reserved: U16::new(0),
        body_len: U32::new(body.len() as u32),
        body_crc32c: U32::new(crc32c::crc32c(body)),
    };
    out.reserve(HEADER_BYTES + body.len());
    out.put_slice(header.as_bytes());
    out.put_slice(body);
}

fn fixed<T: FromBytes + KnownLayout + Immutable>(body: &[u8], what: &str) -> Result<T, FrameError> {
    if body.len() != size_of::<T>() {
        return Err(FrameError::new(
            ErrorCode::Malformed,
            format!("{what} body of {} bytes, expected {}", body.len(), size_of::<T>()),
        ));
    }
    T::read_from_bytes(body).map_err(|_| FrameError::new(ErrorCode::Malformed, format!("{what} body")))
}

/// The size of a HELLO body.
pub const HELLO_BODY_BYTES: usize = size_of::<HelloBody>();

pub fn decode_hello(body: &[u8]) -> Result<HelloBody, FrameError> {
    let hello: HelloBody = fixed(body, "HELLO")?;
    if hello.reserved != [0; 7] {
        return Err(FrameError::new(ErrorCode::NonZeroReserved, "HELLO reserved bytes"));
    }
    Ok(hello)
}

pub fn decode_welcome(body: &[u8]) -> Result<WelcomeBody, FrameError> {
    fixed(body, "WELCOME")
}

pub fn decode_ack(body: &[u8]) -> Result<AckBody, FrameError> {
    fixed(body, "ACK")
}

pub fn decode_credit(body: &[u8]) -> Result<CreditBody, FrameError> {
    fixed(body, "CREDIT")
}

/// A REJECT or ERROR frame with its reason text.
pub fn decode_reject(body: &[u8]) -> Result<(RejectBody, String), FrameError> {
    let (head, rest) =
        RejectBody::read_from_prefix(body).map_err(|_| FrameError::new(ErrorCode::Malformed, "REJECT body"))?;
    if rest.len() != head.reason_len.get() as usize {
        return Err(FrameError::new(ErrorCode::Malformed, "REJECT reason length"));
    }
    Ok((head, String::from_utf8_lossy(rest).into_owned()))
}

pub fn decode_error(body: &[u8]) -> Result<(u16, String), FrameError> {
    let (head, rest) =
        ErrorBody::read_from_prefix(body).map_err(|_| FrameError::new(ErrorCode::Malformed, "ERROR body"))?;
    if rest.len() != head.reason_len.get() as usize {
        return Err(FrameError::new(ErrorCode::Malformed, "ERROR reason length"));
    }
    Ok((head.code.get(), String::from_utf8_lossy(rest).into_owned()))
}

fn truncated_reason(reason: &str) -> &[u8] {
    let mut end = reason.len().min(REASON_BYTES_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason.as_bytes()[..end]
}

pub fn encode_error(out: &mut BytesMut, code: ErrorCode, reason: &str) {
    encode_coded(out, Kind::Error, code as u16, reason);
}

/// STATUS has the ERROR body layout (code, reason length, reserved, reason).
pub fn encode_status(out: &mut BytesMut, code: StatusCode, reason: &str) {
    encode_coded(out, Kind::Status, code as u16, reason);
}

fn encode_coded(out: &mut BytesMut, kind: Kind, code: u16, reason: &str) {
    let reason = truncated_reason(reason);
    let mut body = Vec::with_capacity(size_of::<ErrorBody>() + reason.len());
    let head = ErrorBody { code: U16::new(code), reason_len: U16::new(reason.len() as u16), reserved: U32::new(0) };
    body.extend_from_slice(head.as_bytes());
    body.extend_from_slice(reason);
    encode_frame(out, kind, &body);
}

pub fn encode_reject(out: &mut BytesMut, epoch: u64, seq: u64, code: RejectCode, reason: &str) {
    let reason = truncated_reason(reason);
    let mut body = Vec::with_capacity(size_of::<RejectBody>() + reason.len());
    let head = RejectBody {
        epoch: U64::new(epoch),
        seq: U64::new(seq),
        code: U16::new(code as u16),
        reason_len: U16::new(reason.len() as u16),
        reserved: U32::new(0),
    };
    body.extend_from_slice(head.as_bytes());
    body.extend_from_slice(reason);
    encode_frame(out, Kind::Reject, &body);
}

pub fn encode_ack(out: &mut BytesMut, epoch: u64, durable_seq: u64) {
    encode_frame(out, Kind::Ack, AckBody { epoch: U64::new(epoch), durable_seq: U64::new(durable_seq) }.as_bytes());
}

pub fn encode_credit(out: &mut BytesMut, credit_bytes: u32) {
    encode_frame(
        out,
        Kind::Credit,
        CreditBody { credit_bytes: U32::new(credit_bytes), reserved: U32::new(0) }.as_bytes(),
    );
}

pub fn encode_welcome(out: &mut BytesMut, watermark_epoch: u64, watermark_seq: u64, credit_bytes: u32) {
    let body = WelcomeBody {
        watermark_epoch: U64::new(watermark_epoch),
        watermark_seq: U64::new(watermark_seq),
        credit_bytes: U32::new(credit_bytes),
        reserved: U32::new(0),
    };
    encode_frame(out, Kind::Welcome, body.as_bytes());
}

pub fn encode_hello(out: &mut BytesMut, module: u8, producer_id: u64, producer_epoch: u64) {
    let body = HelloBody {
        module,
        reserved: [0; 7],
        producer_id: U64::new(producer_id),
        producer_epoch: U64::new(producer_epoch),
    };
    encode_frame(out, Kind::Hello, body.as_bytes());
}

/// One event record, borrowed from an EVENTS body.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub table: u8,
    pub field_count: u16,
    pub source_id: &'a [u8; 16],
    pub event_time_us: i64,
    /// The fields in COPY BINARY encoding: per field an i32 length (-1 for
    /// NULL) and that many bytes of PostgreSQL binary send format.
    pub fields: &'a [u8],
    /// The whole record as received (for quarantine).
    pub raw: &'a [u8],
}

/// A decoded EVENTS frame: its sequence range and its records.
#[derive(Debug)]
pub struct Events<'a> {
    pub first_seq: u64,
    pub records: Vec<RecordRef<'a>>,
}

/// Split an EVENTS body into records, checking every length against the
/// body and its cap. The records borrow the body; nothing is copied.
pub fn decode_events(body: &[u8]) -> Result<Events<'_>, FrameError> {
    let malformed = |what: String| FrameError::new(ErrorCode::Malformed, what);
    let (head, mut rest) = EventsHeader::read_from_prefix(body).map_err(|_| malformed("EVENTS header".into()))?;
    let count = head.count.get();
    if count == 0 || count > FRAME_EVENTS_MAX {
        return Err(malformed(format!("EVENTS count {count} outside 1..={FRAME_EVENTS_MAX}")));
    }
    if head.reserved.get() != 0 {
        return Err(FrameError::new(ErrorCode::NonZeroReserved, "EVENTS reserved"));
    }
    let first_seq = head.first_seq.get();
    if first_seq == 0 || first_seq.checked_add(u64::from(count)).is_none_or(|end| end > i64::MAX as u64) {
        return Err(malformed(format!(
            "sequence range {first_seq}+{count}: first_seq must be at least 1 and first_seq + count at most 2^63 - 1"
        )));
    }
    let mut records = Vec::with_capacity(count as usize);
    for index in 0..count {
        let (record, tail) =
            RecordHeader::read_from_prefix(rest).map_err(|_| malformed(format!("record {index}: truncated header")))?;
        let record_len = record.record_len.get() as usize;
        let after_len = RECORD_HEADER_BYTES - 4;
        if record_len < after_len || record_len + 4 > RECORD_BYTES_MAX {
            return Err(malformed(format!(
                "record {index}: length {record_len} outside {after_len}..={}",
                RECORD_BYTES_MAX - 4
            )));
        }
        let fields_len = record_len - after_len;
        if tail.len() < fields_len {
            return Err(malformed(format!("record {index}: {fields_len} field bytes announced, {} left", tail.len())));
        }
        if record.reserved != 0 {
            return Err(FrameError::new(ErrorCode::NonZeroReserved, format!("record {index} reserved")));
        }
        let raw = &rest[..4 + record_len];
        let (fields, next) = tail.split_at(fields_len);
        let source_id: &[u8; 16] = raw[8..24].try_into().map_err(|_| malformed("source id".into()))?;
        records.push(RecordRef {
            table: record.table,
            field_count: record.field_count.get(),
            source_id,
            event_time_us: record.event_time_us.get(),
            fields,
            raw,
        });
        rest = next;
    }
    if !rest.is_empty() {
        return Err(malformed(format!("{} bytes after the last of {count} records", rest.len())));
    }
    Ok(Events { first_seq, records })
}

/// Append one record to an EVENTS body under construction (client side).
pub fn encode_record(
    out: &mut BytesMut,
    table: u8,
    source_id: &[u8; 16],
    event_time_us: i64,
    field_count: u16,
    fields: &[u8],
) {
    let header = RecordHeader {
        record_len: U32::new((RECORD_HEADER_BYTES - 4 + fields.len()) as u32),
        table,
        reserved: 0,
        field_count: U16::new(field_count),
        source_id: *source_id,
        event_time_us: I64::new(event_time_us),
    };
    out.put_slice(header.as_bytes());
    out.put_slice(fields);
}

/// Start an EVENTS body: its header, to be followed by `count` records.
pub fn encode_events_header(out: &mut BytesMut, first_seq: u64, count: u32) {
    let header = EventsHeader { first_seq: U64::new(first_seq), count: U32::new(count), reserved: U32::new(0) };
    out.put_slice(header.as_bytes());
}

/// The wire code of a module in HELLO.
pub fn module_code(module: crate::model::matrix::Module) -> u8 {
    match module {
        crate::model::matrix::Module::Core => 1,
        crate::model::matrix::Module::Dpi => 2,
        crate::model::matrix::Module::LinuxAgent => 3,
        crate::model::matrix::Module::WindowsAgent => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_sixteen_bytes_big_endian() {
        let mut out = BytesMut::new();
        encode_frame(&mut out, Kind::Credit, &[1, 2, 3]);
        assert_eq!(&out[..8], &[0x52, 0x45, 1, 5, 0, 0, 0, 0]);
        assert_eq!(&out[8..12], &[0, 0, 0, 3]);
        assert_eq!(&out[12..16], &crc32c::crc32c(&[1, 2, 3]).to_be_bytes());
        assert_eq!(out.len(), 19);
    }

    #[test]
    fn round_trip_and_partial_input() {
        let mut out = BytesMut::new();
        encode_hello(&mut out, 3, 42, 7);
        let whole = out.clone();
        let mut partial = BytesMut::from(&whole[..10]);
        assert!(decode_frame(&mut partial).unwrap().is_none());
        partial.extend_from_slice(&whole[10..]);
        let frame = decode_frame(&mut partial).unwrap().unwrap();
        assert_eq!(frame.kind, Kind::Hello);
        let hello = decode_hello(&frame.body).unwrap();
        assert_eq!((hello.module, hello.producer_id.get(), hello.producer_epoch.get()), (3, 42, 7));
    }

    #[test]
    fn oversize_length_is_refused_from_the_header_alone() {
        let mut out = BytesMut::new();
        encode_frame(&mut out, Kind::Events, &[]);
        out[8..12].copy_from_slice(&(FRAME_BODY_BYTES_MAX as u32 + 1).to_be_bytes());
        let mut only_header = BytesMut::from(&out[..16]);
        assert_eq!(decode_frame(&mut only_header).unwrap_err().code, ErrorCode::FrameTooLarge);
    }

    #[test]
    fn bad_checksum_version_magic_and_kind() {
        let mut good = BytesMut::new();
        encode_ack(&mut good, 1, 2);
        for (offset, value, code) in [
            (16, 0xff, ErrorCode::BadChecksum),
            (2, 9, ErrorCode::UnsupportedVersion),
            (0, 0, ErrorCode::BadMagic),
            (3, 99, ErrorCode::UnknownKind),
            (5, 1, ErrorCode::NonZeroReserved),
        ] {
            let mut bad = good.clone();
            bad[offset] ^= value;
            if offset == 0 {
                bad[0] = 0;
            }
            assert_eq!(decode_frame(&mut bad).unwrap_err().code, code, "offset {offset}");
        }
    }

    #[test]
    fn events_lengths_are_checked() {
        let mut body = BytesMut::new();
        encode_events_header(&mut body, 1, 2);
        encode_record(&mut body, 0, &[7; 16], 5, 1, &[0, 0, 0, 2, 0, 9]);
        encode_record(&mut body, 1, &[8; 16], 6, 0, &[]);
        let events = decode_events(&body).unwrap();
        assert_eq!(events.records.len(), 2);
        assert_eq!(events.records[0].fields, &[0, 0, 0, 2, 0, 9]);
        assert_eq!(events.records[1].source_id, &[8; 16]);
        // One record fewer than announced, and a truncated one.
        assert!(decode_events(&body[..body.len() - RECORD_HEADER_BYTES]).is_err());
        assert!(decode_events(&body[..body.len() - 1]).is_err());
        let mut extra = body.clone();
        extra.put_u8(0);
        assert!(decode_events(&extra).is_err());
    }
}
