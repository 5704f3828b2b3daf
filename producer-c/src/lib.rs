//! The C ABI of the RansomEye producer library (`libransomeye_producer`):
//! a module written in C, C++, Go or Python sends its events to its lane
//! through these functions. The header is `include/ransomeye_producer.h`;
//! every function there is defined here, with the same names and types.
//!
//! Conventions: functions returning `int` return `RP_OK` (0) or a negative
//! `RP_ERR_*`; after an error, `rp_stream_last_error` names the cause and
//! `rp_stream_last_code` the lane's ERROR or REJECT code when there is one.
//! Strings in are NUL-terminated UTF-8 (text values: pointer and length).
//! A stream and an event are used by one thread at a time. No function
//! panics across the boundary: a Rust panic is caught and reported as
//! `RP_ERR_INTERNAL`.

use std::ffi::{CStr, CString, c_char, c_int};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use applianced::model::matrix::Module;
use applianced::producer::event::{EventBuilder, EventError, Value};
use applianced::producer::stream::{Stream, StreamConfig, StreamError};

pub const RP_OK: c_int = 0;
/// The lane is not reachable now; events are kept and resent (retry pump/flush).
pub const RP_ERR_DISCONNECTED: c_int = -1;
/// The lane refused this producer for good (`rp_stream_last_code`: its ERROR code).
pub const RP_ERR_REFUSED: c_int = -2;
/// The event is invalid and was not queued (`rp_stream_last_code`: its REJECT code, or 0).
pub const RP_ERR_EVENT: c_int = -3;
/// Too many events wait for acknowledgement: pump or flush first.
pub const RP_ERR_FULL: c_int = -4;
/// `rp_stream_flush` ran out of time.
pub const RP_ERR_TIMEOUT: c_int = -5;
/// A NULL pointer, a bad string, an unknown module or table.
pub const RP_ERR_ARGUMENT: c_int = -6;
/// A bug in the library (a caught panic).
pub const RP_ERR_INTERNAL: c_int = -7;

/// An open stream and its last error.
pub struct RpStream {
    stream: Stream,
    last_error: CString,
    last_code: u16,
}

/// An event being built, value by value, and its last error.
pub struct RpEvent {
    builder: EventBuilder,
    failed: Option<EventError>,
}

fn module_named(name: &str) -> Option<Module> {
    Module::ALL.into_iter().find(|m| m.name() == name)
}

/// A C string argument as UTF-8.
///
/// # Safety
/// `text` is NULL or points to a NUL-terminated string valid for the call.
unsafe fn text_arg<'a>(text: *const c_char) -> Option<&'a str> {
    if text.is_null() {
        return None;
    }
    // SAFETY: non-NULL and NUL-terminated, by this function's contract.
    unsafe { CStr::from_ptr(text) }.to_str().ok()
}

/// The lane's rejection of a text value that is not UTF-8 (the library
/// says it before sending).
fn text_not_utf8() -> EventError {
    EventError::Rejected { code: applianced::codec::frame::RejectCode::TextNotUtf8, reason: "text is not UTF-8".into() }
}

/// Copy `message` into the caller's buffer (cut to fit, NUL-terminated).
///
/// # Safety
/// `out` is NULL or points to `len` writable bytes.
unsafe fn write_error(out: *mut c_char, len: usize, message: &str) {
    if out.is_null() || len == 0 {
        return;
    }
    let n = message.len().min(len - 1);
    // SAFETY: `out` has `len` writable bytes and `n + 1 <= len`; the source
    // is `message`'s own bytes, which cannot overlap a caller's buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(message.as_ptr(), out.cast::<u8>(), n);
        *out.add(n) = 0;
    }
}

fn c_string(message: String) -> CString {
    CString::new(message.replace('\0', " ")).unwrap_or_default()
}

impl RpStream {
    fn fail(&mut self, error: &StreamError) -> c_int {
        self.last_code = 0;
        self.last_error = c_string(error.to_string());
        match error {
            StreamError::Disconnected(_) => RP_ERR_DISCONNECTED,
            StreamError::Refused { code, .. } => {
                self.last_code = *code;
                RP_ERR_REFUSED
            }
            StreamError::Event(e) => {
                if let EventError::Rejected { code, .. } = e {
                    self.last_code = *code as u16;
                }
                RP_ERR_EVENT
            }
            StreamError::Full => RP_ERR_FULL,
            StreamError::Timeout { .. } => RP_ERR_TIMEOUT,
        }
    }
}

/// Run `f`, turning a panic into `fallback`.
fn guarded<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// Open a stream to the lane of `module` of appliance `instance`, as
/// producer `producer_id` in `epoch`, refusing a socket not owned by
/// `server_uid`. NULL on failure, with the reason in `error`.
///
/// # Safety
/// String arguments are NULL or NUL-terminated; `error` is NULL or has
/// `error_len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_stream_open(
    instance: *const c_char,
    module: *const c_char,
    producer_id: u64,
    epoch: u64,
    server_uid: u32,
    error: *mut c_char,
    error_len: usize,
) -> *mut RpStream {
    // SAFETY: the caller passes NUL-terminated strings or NULL.
    let (instance, module) = unsafe { (text_arg(instance), text_arg(module)) };
    let opened = guarded(Err("internal error".to_string()), || {
        let instance = instance.ok_or("instance is not a UTF-8 string")?;
        let module = module.and_then(module_named).ok_or("module is not core, dpi, linux_agent or windows_agent")?;
        let config = StreamConfig { instance: instance.to_string(), module, producer_id, epoch, server_uid };
        Stream::connect(config).map_err(|e| e.to_string())
    });
    match opened {
        Ok(stream) => Box::into_raw(Box::new(RpStream { stream, last_error: CString::default(), last_code: 0 })),
        Err(message) => {
            // SAFETY: `error` has `error_len` writable bytes or is NULL.
            unsafe { write_error(error, error_len, &message) };
            std::ptr::null_mut()
        }
    }
}

/// Close a stream (events not yet acknowledged are dropped: flush first).
///
/// # Safety
/// `stream` is NULL or was returned by `rp_stream_open` and not closed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_stream_close(stream: *mut RpStream) {
    if !stream.is_null() {
        // SAFETY: allocated by `rp_stream_open` with Box, closed once.
        drop(unsafe { Box::from_raw(stream) });
    }
}

/// The stream behind a handle.
///
/// # Safety
/// `stream` is NULL or a live handle not used by another thread.
unsafe fn stream_mut<'a>(stream: *mut RpStream) -> Option<&'a mut RpStream> {
    // SAFETY: by this function's contract.
    unsafe { stream.as_mut() }
}

/// Start an event of `module`'s table `table` (e.g. "dpi", "flows").
/// NULL on failure, with the reason in `error`.
///
/// # Safety
/// As `rp_stream_open`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_event_new(
    module: *const c_char,
    table: *const c_char,
    error: *mut c_char,
    error_len: usize,
) -> *mut RpEvent {
    // SAFETY: the caller passes NUL-terminated strings or NULL.
    let (module, table) = unsafe { (text_arg(module), text_arg(table)) };
    let built = guarded(Err("internal error".to_string()), || {
        let module = module.and_then(module_named).ok_or("unknown module")?;
        EventBuilder::new(module, table.ok_or("table is not a UTF-8 string")?).map_err(|e| e.to_string())
    });
    match built {
        Ok(builder) => Box::into_raw(Box::new(RpEvent { builder, failed: None })),
        Err(message) => {
            // SAFETY: `error` has `error_len` writable bytes or is NULL.
            unsafe { write_error(error, error_len, &message) };
            std::ptr::null_mut()
        }
    }
}

/// Free an event.
///
/// # Safety
/// `event` is NULL or was returned by `rp_event_new` and not freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_event_free(event: *mut RpEvent) {
    if !event.is_null() {
        // SAFETY: allocated by `rp_event_new` with Box, freed once.
        drop(unsafe { Box::from_raw(event) });
    }
}

/// The number of values an event of this table takes.
///
/// # Safety
/// `event` is NULL or a live event.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_event_column_count(event: *const RpEvent) -> usize {
    // SAFETY: by the contract, NULL or live.
    unsafe { event.as_ref() }.map_or(0, |e| e.builder.columns().count())
}

/// Column `index`'s SQL type ("smallint", "integer", "bigint", "real",
/// "text", "bytea", "uuid", "inet", "timestamp with time zone"), or NULL.
/// The string is static.
///
/// # Safety
/// `event` is NULL or a live event.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_event_column_type(event: *const RpEvent, index: usize) -> *const c_char {
    // SAFETY: by the contract, NULL or live.
    let Some(event) = (unsafe { event.as_ref() }) else { return std::ptr::null() };
    match event.builder.columns().nth(index).map(|(_, sql_type, _)| sql_type) {
        Some("smallint") => c"smallint".as_ptr(),
        Some("integer") => c"integer".as_ptr(),
        Some("bigint") => c"bigint".as_ptr(),
        Some("real") => c"real".as_ptr(),
        Some("text") => c"text".as_ptr(),
        Some("bytea") => c"bytea".as_ptr(),
        Some("uuid") => c"uuid".as_ptr(),
        Some("inet") => c"inet".as_ptr(),
        Some("timestamp with time zone") => c"timestamp with time zone".as_ptr(),
        _ => std::ptr::null(),
    }
}

/// Add the next column's value; a wrong value is remembered and reported
/// by `rp_stream_send` (the event is then not queued).
///
/// # Safety
/// `event` is NULL or a live event.
unsafe fn push(event: *mut RpEvent, value: Value<'_>) -> c_int {
    // SAFETY: by the contract, NULL or live and not shared.
    let Some(event) = (unsafe { event.as_mut() }) else { return RP_ERR_ARGUMENT };
    if event.failed.is_some() {
        return RP_ERR_EVENT;
    }
    match event.builder.push(value) {
        Ok(_) => RP_OK,
        Err(e) => {
            event.failed = Some(e);
            RP_ERR_EVENT
        }
    }
}

/// NULL (only in a nullable column).
///
/// # Safety
/// `event` is NULL or a live event.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_event_null(event: *mut RpEvent) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { push(event, Value::Null) }
}

/// smallint, integer or bigint.
///
/// # Safety
/// `event` is NULL or a live event.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_event_int(event: *mut RpEvent, value: i64) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { push(event, Value::Int(value)) }
}

/// real.
///
/// # Safety
/// `event` is NULL or a live event.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_event_float(event: *mut RpEvent, value: f32) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { push(event, Value::Float(value)) }
}

/// text: `len` bytes of UTF-8 at `text`.
///
/// # Safety
/// `event` is NULL or a live event; `text` points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_event_text(event: *mut RpEvent, text: *const c_char, len: usize) -> c_int {
    if text.is_null() {
        return RP_ERR_ARGUMENT;
    }
    // SAFETY: `text` has `len` readable bytes by the contract.
    let bytes = unsafe { std::slice::from_raw_parts(text.cast::<u8>(), len) };
    match std::str::from_utf8(bytes) {
        // SAFETY: forwarded contract.
        Ok(text) => unsafe { push(event, Value::Text(text)) },
        Err(_) => {
            // SAFETY: by the contract, NULL or live.
            if let Some(event) = unsafe { event.as_mut() } {
                event.failed.get_or_insert_with(text_not_utf8);
            }
            RP_ERR_EVENT
        }
    }
}

/// bytea: `len` bytes at `bytes`.
///
/// # Safety
/// `event` is NULL or a live event; `bytes` points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_event_bytes(event: *mut RpEvent, bytes: *const u8, len: usize) -> c_int {
    if bytes.is_null() && len > 0 {
        return RP_ERR_ARGUMENT;
    }
    let value: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: `bytes` has `len` readable bytes by the contract.
        unsafe { std::slice::from_raw_parts(bytes, len) }
    };
    // SAFETY: forwarded contract.
    unsafe { push(event, Value::Bytes(value)) }
}

/// uuid: 16 bytes.
///
/// # Safety
/// `event` is NULL or a live event; `uuid` points to 16 readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_event_uuid(event: *mut RpEvent, uuid: *const u8) -> c_int {
    if uuid.is_null() {
        return RP_ERR_ARGUMENT;
    }
    // SAFETY: 16 readable bytes by the contract.
    let value: [u8; 16] = unsafe { std::ptr::read_unaligned(uuid.cast::<[u8; 16]>()) };
    // SAFETY: forwarded contract.
    unsafe { push(event, Value::Uuid(value)) }
}

/// inet: an IPv4 (`len` 4) or IPv6 (`len` 16) address in network order,
/// and its prefix length (32 or 128 for one host).
///
/// # Safety
/// `event` is NULL or a live event; `address` points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_event_inet(event: *mut RpEvent, address: *const u8, len: usize, bits: u8) -> c_int {
    if address.is_null() {
        return RP_ERR_ARGUMENT;
    }
    // SAFETY: `address` has `len` readable bytes by the contract.
    let bytes = unsafe { std::slice::from_raw_parts(address, len) };
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(bytes);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return RP_ERR_ARGUMENT,
    };
    // SAFETY: forwarded contract.
    unsafe { push(event, Value::Inet(ip, bits)) }
}

/// timestamp with time zone: microseconds since 1970-01-01 UTC.
///
/// # Safety
/// `event` is NULL or a live event.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_event_time(event: *mut RpEvent, unix_us: i64) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { push(event, Value::Time(unix_us)) }
}

/// Queue the event `event` holds (checked as the lane checks it), with its
/// 16-byte source id and event time; returns its seq (> 0), or a negative
/// `RP_ERR_*`. The event is emptied either way, ready for the next values.
///
/// # Safety
/// `stream` and `event` are live handles; `source_id` points to 16 bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_stream_send(
    stream: *mut RpStream,
    event: *mut RpEvent,
    source_id: *const u8,
    event_time_us: i64,
) -> i64 {
    // SAFETY: live handles by the contract; distinct objects.
    let (Some(s), Some(e)) = (unsafe { stream_mut(stream) }, unsafe { event.as_mut() }) else {
        return i64::from(RP_ERR_ARGUMENT);
    };
    if source_id.is_null() {
        return i64::from(RP_ERR_ARGUMENT);
    }
    // SAFETY: 16 readable bytes by the contract.
    let source: [u8; 16] = unsafe { std::ptr::read_unaligned(source_id.cast::<[u8; 16]>()) };
    if let Some(failed) = e.failed.take() {
        e.builder.clear();
        return i64::from(s.fail(&StreamError::Event(failed)));
    }
    let result = guarded(Err(StreamError::Full), || s.stream.send_event(&mut e.builder, &source, event_time_us));
    match result {
        Ok(seq) => seq as i64,
        Err(error) => i64::from(s.fail(&error)),
    }
}

/// Queue an event of `event`'s table given as its fields already encoded
/// (COPY BINARY field encoding of every column, PROTOCOL.md §5: per field
/// a big-endian i32 length, -1 for NULL, then PostgreSQL's binary form),
/// checked as the lane checks it; returns its seq (> 0) or a negative
/// `RP_ERR_*`. Values pushed into `event` so far are dropped.
///
/// # Safety
/// `stream` and `event` are live handles; `fields` points to `len`
/// readable bytes; `source_id` to 16.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_stream_send_fields(
    stream: *mut RpStream,
    event: *mut RpEvent,
    fields: *const u8,
    len: usize,
    source_id: *const u8,
    event_time_us: i64,
) -> i64 {
    // SAFETY: live handles by the contract; distinct objects.
    let (Some(s), Some(e)) = (unsafe { stream_mut(stream) }, unsafe { event.as_mut() }) else {
        return i64::from(RP_ERR_ARGUMENT);
    };
    if source_id.is_null() || (fields.is_null() && len > 0) {
        return i64::from(RP_ERR_ARGUMENT);
    }
    // SAFETY: 16 readable bytes by the contract.
    let source: [u8; 16] = unsafe { std::ptr::read_unaligned(source_id.cast::<[u8; 16]>()) };
    let bytes: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: `fields` has `len` readable bytes by the contract.
        unsafe { std::slice::from_raw_parts(fields, len) }
    };
    e.failed = None;
    let result =
        guarded(Err(StreamError::Full), || s.stream.send_encoded(&mut e.builder, bytes, &source, event_time_us));
    match result {
        Ok(seq) => seq as i64,
        Err(error) => i64::from(s.fail(&error)),
    }
}

/// `RpColumn::kind`: an `int64_t` per row (smallint, integer, bigint).
pub const RP_COLUMN_INT: u32 = 1;
/// `RpColumn::kind`: a `float` per row (real).
pub const RP_COLUMN_FLOAT: u32 = 2;
/// `RpColumn::kind`: UTF-8 text back to back, `lengths` per row (text).
pub const RP_COLUMN_TEXT: u32 = 3;
/// `RpColumn::kind`: bytes back to back, `lengths` per row (bytea).
pub const RP_COLUMN_BYTES: u32 = 4;
/// `RpColumn::kind`: 16 bytes per row (uuid).
pub const RP_COLUMN_UUID: u32 = 5;
/// `RpColumn::kind`: addresses in network order back to back, `lengths`
/// per row 4 (IPv4) or 16 (IPv6), each one host (inet /32 or /128).
pub const RP_COLUMN_INET: u32 = 6;
/// `RpColumn::kind`: an `int64_t` per row, microseconds since 1970-01-01
/// UTC (timestamp with time zone).
pub const RP_COLUMN_TIME: u32 = 7;

/// One column of a batch of rows (`rp_stream_send_columns`): its values
/// for every row, as `kind` says, and which rows are NULL.
#[repr(C)]
pub struct RpColumn {
    /// `RP_COLUMN_*`.
    pub kind: u32,
    /// The values: fixed-size kinds one per row; the others back to back.
    pub values: *const u8,
    /// Per row, the byte length of its value (text, bytes, inet; NULL for
    /// the fixed-size kinds). A NULL row's length is counted (give 0).
    pub lengths: *const u32,
    /// NULL (no row is NULL) or one byte per row, non-zero for NULL.
    pub nulls: *const u8,
}

/// Row `row` of an array of `T` (a caller's buffer: maybe unaligned).
///
/// # Safety
/// `values` points to more than `row` values of `T`.
unsafe fn fixed_at<T: Copy>(values: *const u8, row: usize) -> T {
    // SAFETY: in bounds by the contract; read_unaligned needs no alignment.
    unsafe { values.cast::<T>().add(row).read_unaligned() }
}

/// The value of row `row` of `column`, whose variable-size values start at
/// byte `offset`; advances `offset` past it.
///
/// # Safety
/// `column` satisfies `rp_stream_send_columns`' contract for more than
/// `row` rows, and `offset` is the sum of the lengths of the rows before.
unsafe fn column_value<'a>(column: &'a RpColumn, row: usize, offset: &mut usize) -> Result<Value<'a>, RowError> {
    let variable = matches!(column.kind, RP_COLUMN_TEXT | RP_COLUMN_BYTES | RP_COLUMN_INET);
    let bytes: &'a [u8] = if variable {
        if column.lengths.is_null() {
            return Err(RowError::Argument);
        }
        // SAFETY: `lengths` has one entry per row by the contract.
        let len = unsafe { column.lengths.add(row).read_unaligned() } as usize;
        let start = *offset;
        *offset += len;
        if len == 0 {
            &[]
        } else {
            // SAFETY: `values` holds every row's bytes back to back, so the
            // `len` bytes of this row start at `start`.
            unsafe { std::slice::from_raw_parts(column.values.add(start), len) }
        }
    } else {
        &[]
    };
    // SAFETY: `nulls` is NULL or has one byte per row by the contract.
    if !column.nulls.is_null() && unsafe { column.nulls.add(row).read() } != 0 {
        return Ok(Value::Null);
    }
    // The fixed-size kinds: `values` holds one value of the kind's size per
    // row by the contract.
    let values = column.values;
    Ok(match column.kind {
        // SAFETY: an int64_t per row (above).
        RP_COLUMN_INT => Value::Int(unsafe { fixed_at(values, row) }),
        // SAFETY: a float per row (above).
        RP_COLUMN_FLOAT => Value::Float(unsafe { fixed_at(values, row) }),
        // SAFETY: an int64_t per row (above).
        RP_COLUMN_TIME => Value::Time(unsafe { fixed_at(values, row) }),
        // SAFETY: 16 bytes per row (above).
        RP_COLUMN_UUID => Value::Uuid(unsafe { fixed_at(values, row) }),
        RP_COLUMN_TEXT => match std::str::from_utf8(bytes) {
            Ok(text) => Value::Text(text),
            Err(_) => return Err(RowError::Stream(StreamError::Event(text_not_utf8()))),
        },
        RP_COLUMN_BYTES => Value::Bytes(bytes),
        RP_COLUMN_INET => match <[u8; 4]>::try_from(bytes) {
            Ok(v4) => Value::Inet(IpAddr::V4(Ipv4Addr::from(v4)), 32),
            Err(_) => match <[u8; 16]>::try_from(bytes) {
                Ok(v6) => Value::Inet(IpAddr::V6(Ipv6Addr::from(v6)), 128),
                Err(_) => return Err(RowError::Argument),
            },
        },
        _ => return Err(RowError::Argument),
    })
}

/// Why a row of a batch was not queued.
#[derive(Debug)]
enum RowError {
    /// A column's kind or lengths break the call's contract.
    Argument,
    /// The event is invalid, or the stream could not take it.
    Stream(StreamError),
}

/// Queue row `row` of a batch: its values from `columns` (variable-size
/// ones from `offsets`, advanced past them), checked as the lane checks
/// them, with its source id and event time.
///
/// # Safety
/// As `rp_stream_send_columns`, for a `row` below its `rows`; `offsets`
/// are the columns' prefix sums before `row`.
unsafe fn queue_row(
    s: &mut RpStream,
    e: &mut RpEvent,
    columns: &[RpColumn],
    offsets: &mut [usize],
    source_ids: *const u8,
    event_times_us: *const i64,
    row: usize,
) -> Result<(), RowError> {
    e.builder.clear();
    for (column, offset) in columns.iter().zip(offsets.iter_mut()) {
        // SAFETY: the contract covers `row`; `offset` is the prefix sum.
        let value = unsafe { column_value(column, row, offset) }?;
        e.builder.push(value).map_err(|error| RowError::Stream(StreamError::Event(error)))?;
    }
    // SAFETY: 16 bytes and one time per row by the contract.
    let source: [u8; 16] = unsafe { source_ids.cast::<[u8; 16]>().add(row).read_unaligned() };
    // SAFETY: as above.
    let time = unsafe { event_times_us.add(row).read_unaligned() };
    s.stream.send_event(&mut e.builder, &source, time).map(|_| ()).map_err(RowError::Stream)
}

/// Queue rows `start..rows` of a batch given column by column (the fast
/// path for bindings: one call per batch, not one per value), each row an
/// event of `event`'s table checked as the lane checks it. `columns` has
/// one entry per column of the table, in column order; `source_ids` holds
/// 16 bytes per row, `event_times_us` one time per row.
///
/// Returns `RP_OK` when every row is queued. Otherwise `*next` is the first
/// row not queued (the rows before it are): `RP_ERR_FULL` (pump, then call
/// again from `*next`), `RP_ERR_EVENT` (that row is invalid:
/// `rp_stream_last_error` names the row and why), `RP_ERR_ARGUMENT`.
///
/// # Safety
/// `stream` and `event` are live handles; `columns` points to
/// `column_count` columns, each holding `rows` values as its kind says
/// (`lengths` and `nulls` as documented on `rp_column`); `source_ids`
/// points to `16 * rows` bytes and `event_times_us` to `rows` values;
/// `next` is NULL or writable.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)] // one flat C call per batch, by design
pub unsafe extern "C" fn rp_stream_send_columns(
    stream: *mut RpStream,
    event: *mut RpEvent,
    columns: *const RpColumn,
    column_count: usize,
    source_ids: *const u8,
    event_times_us: *const i64,
    rows: usize,
    start: usize,
    next: *mut usize,
) -> c_int {
    let mut done = start;
    let status = 'send: {
        // SAFETY: live handles by the contract; distinct objects.
        let (Some(s), Some(e)) = (unsafe { stream_mut(stream) }, unsafe { event.as_mut() }) else {
            break 'send RP_ERR_ARGUMENT;
        };
        if columns.is_null() || source_ids.is_null() || event_times_us.is_null() || start > rows {
            break 'send RP_ERR_ARGUMENT;
        }
        // SAFETY: `column_count` columns by the contract.
        let columns = unsafe { std::slice::from_raw_parts(columns, column_count) };
        if column_count != e.builder.columns().count() || columns.iter().any(|c| c.values.is_null()) {
            s.last_code = 0;
            s.last_error =
                c_string(format!("{} columns given, the table has {}", column_count, e.builder.columns().count()));
            break 'send RP_ERR_ARGUMENT;
        }
        e.failed = None;
        guarded(RP_ERR_INTERNAL, || {
            // The variable-size columns' byte offsets at row `start`.
            let mut offsets: Vec<usize> = columns
                .iter()
                .map(|c| match c.kind {
                    RP_COLUMN_TEXT | RP_COLUMN_BYTES | RP_COLUMN_INET if !c.lengths.is_null() => {
                        // SAFETY: `lengths` has `rows >= start` entries by the contract.
                        (0..start).map(|r| unsafe { c.lengths.add(r).read_unaligned() } as usize).sum()
                    }
                    _ => 0,
                })
                .collect();
            for row in start..rows {
                // SAFETY: `row < rows`; `offsets` kept as the prefix sums.
                let queued = unsafe { queue_row(s, e, columns, &mut offsets, source_ids, event_times_us, row) };
                let status = match queued {
                    Ok(()) => {
                        done = row + 1;
                        continue;
                    }
                    Err(RowError::Argument) => {
                        s.last_code = 0;
                        s.last_error = c_string(format!("row {row}: a column's kind or length is invalid"));
                        RP_ERR_ARGUMENT
                    }
                    Err(RowError::Stream(error)) => {
                        let status = s.fail(&error);
                        if status == RP_ERR_EVENT {
                            s.last_error = c_string(format!("row {row}: {}", s.last_error.to_string_lossy()));
                        }
                        status
                    }
                };
                e.builder.clear();
                return status;
            }
            RP_OK
        })
    };
    if !next.is_null() {
        // SAFETY: writable by the contract.
        unsafe { next.write(done) };
    }
    status
}

/// Queue one pre-encoded EVENTS record (PROTOCOL.md §5: record header and
/// COPY BINARY fields); returns its seq (> 0) or a negative `RP_ERR_*`.
///
/// # Safety
/// `stream` is a live handle; `record` points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_stream_send_record(stream: *mut RpStream, record: *const u8, len: usize) -> i64 {
    // SAFETY: live handle by the contract.
    let Some(s) = (unsafe { stream_mut(stream) }) else { return i64::from(RP_ERR_ARGUMENT) };
    if record.is_null() {
        return i64::from(RP_ERR_ARGUMENT);
    }
    // SAFETY: `record` has `len` readable bytes by the contract.
    let bytes = unsafe { std::slice::from_raw_parts(record, len) };
    match s.stream.send_record(bytes) {
        Ok(seq) => seq as i64,
        Err(error) => i64::from(s.fail(&error)),
    }
}

/// Send what the credit allows and the socket takes now, and take in
/// replies, waiting up to `wait_ms` (0: only what is there) for a reply or,
/// while frames wait, for room in the socket. For event loops: call when
/// `rp_stream_fd` is readable, when it is writable while
/// `rp_stream_pending_bytes` is not 0, or on a timer.
///
/// # Safety
/// `stream` is a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_stream_pump(stream: *mut RpStream, wait_ms: u32) -> c_int {
    // SAFETY: live handle by the contract.
    let Some(s) = (unsafe { stream_mut(stream) }) else { return RP_ERR_ARGUMENT };
    let result = guarded(Ok(()), || s.stream.pump(Duration::from_millis(wait_ms.into())));
    match result {
        Ok(()) => RP_OK,
        Err(error) => s.fail(&error),
    }
}

/// Wait until every queued event is acknowledged (durable in the
/// appliance), reconnecting as needed, for at most `timeout_ms`.
///
/// # Safety
/// `stream` is a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_stream_flush(stream: *mut RpStream, timeout_ms: u32) -> c_int {
    // SAFETY: live handle by the contract.
    let Some(s) = (unsafe { stream_mut(stream) }) else { return RP_ERR_ARGUMENT };
    let result = guarded(Ok(()), || s.stream.flush(Duration::from_millis(timeout_ms.into())));
    match result {
        Ok(()) => RP_OK,
        Err(error) => s.fail(&error),
    }
}

/// The connection's descriptor (-1 while disconnected), to poll for reading
/// (and for writing while `rp_stream_pending_bytes` is not 0).
///
/// # Safety
/// `stream` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_stream_fd(stream: *const RpStream) -> c_int {
    // SAFETY: by the contract, NULL or live.
    unsafe { stream.as_ref() }.and_then(|s| s.stream.fd()).unwrap_or(-1)
}

/// Bytes of frames waiting for room in the socket (0: nothing to write;
/// else poll `rp_stream_fd` for writing too).
///
/// # Safety
/// `stream` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_stream_pending_bytes(stream: *const RpStream) -> usize {
    // SAFETY: by the contract, NULL or live.
    unsafe { stream.as_ref() }.map_or(0, |s| s.stream.pending_output())
}

/// Events acknowledged so far.
///
/// # Safety
/// `stream` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_stream_acked(stream: *const RpStream) -> u64 {
    // SAFETY: by the contract, NULL or live.
    unsafe { stream.as_ref() }.map_or(0, |s| s.stream.stats().acked)
}

/// Events the lane rejected so far (each also acknowledged: it is stored
/// in the module's quarantine table).
///
/// # Safety
/// `stream` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_stream_rejected(stream: *const RpStream) -> u64 {
    // SAFETY: by the contract, NULL or live.
    unsafe { stream.as_ref() }.map_or(0, |s| s.stream.stats().rejected)
}

/// Reports of acknowledged events the appliance lost (should stay 0).
///
/// # Safety
/// `stream` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_stream_lost_reports(stream: *const RpStream) -> u64 {
    // SAFETY: by the contract, NULL or live.
    unsafe { stream.as_ref() }.map_or(0, |s| s.stream.stats().lost.len() as u64)
}

/// The seq the next event gets.
///
/// # Safety
/// `stream` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_stream_next_seq(stream: *const RpStream) -> u64 {
    // SAFETY: by the contract, NULL or live.
    unsafe { stream.as_ref() }.map_or(0, |s| s.stream.next_seq())
}

/// The last error's text ("" if none); valid until the next call on `stream`.
///
/// # Safety
/// `stream` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_stream_last_error(stream: *const RpStream) -> *const c_char {
    // SAFETY: by the contract, NULL or live.
    unsafe { stream.as_ref() }.map_or(c"".as_ptr(), |s| s.last_error.as_ptr())
}

/// The lane's ERROR code (`RP_ERR_REFUSED`) or REJECT code (`RP_ERR_EVENT`)
/// of the last error, 0 if it had none.
///
/// # Safety
/// `stream` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_stream_last_code(stream: *const RpStream) -> u16 {
    // SAFETY: by the contract, NULL or live.
    unsafe { stream.as_ref() }.map_or(0, |s| s.last_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(kind: u32, values: &[u8], nulls: Option<&[u8]>) -> RpColumn {
        RpColumn {
            kind,
            values: values.as_ptr(),
            lengths: std::ptr::null(),
            nulls: nulls.map_or(std::ptr::null(), <[u8]>::as_ptr),
        }
    }

    fn variable(kind: u32, values: &[u8], lengths: &[u32], nulls: Option<&[u8]>) -> RpColumn {
        RpColumn { lengths: lengths.as_ptr(), ..fixed(kind, values, nulls) }
    }

    /// Every row's value, read as `rp_stream_send_columns` reads them from row `start`.
    fn values(column: &RpColumn, lengths: &[u32], rows: usize, start: usize) -> Vec<Result<Value<'static>, c_int>> {
        let mut offset: usize = lengths.iter().take(start).map(|&l| l as usize).sum();
        (start..rows)
            .map(|row| {
                // SAFETY: the test's columns hold `rows` rows; the values outlive
                // the comparison (the 'static is the test's, not the library's).
                unsafe { column_value(&*(column as *const RpColumn), row, &mut offset) }.map_err(|error| match error {
                    RowError::Argument => RP_ERR_ARGUMENT,
                    RowError::Stream(_) => RP_ERR_EVENT,
                })
            })
            .collect()
    }

    #[test]
    fn columns_are_read_row_by_row_with_nulls_offsets_and_both_address_families() {
        let ints: Vec<u8> = [5i64, -7, i64::MAX].iter().flat_map(|v| v.to_ne_bytes()).collect();
        let int_nulls = [0u8, 1, 0];
        let column = fixed(RP_COLUMN_INT, &ints, Some(&int_nulls));
        assert_eq!(values(&column, &[], 3, 0), vec![Ok(Value::Int(5)), Ok(Value::Null), Ok(Value::Int(i64::MAX))]);

        let floats: Vec<u8> = [0.5f32, 1.25].iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert_eq!(
            values(&fixed(RP_COLUMN_FLOAT, &floats, None), &[], 2, 0),
            vec![Ok(Value::Float(0.5)), Ok(Value::Float(1.25))]
        );

        // Text back to back, a NULL row of length 0 between; read from row 1 too.
        let text = b"abcdefgh";
        let lengths = [3u32, 0, 5];
        let text_nulls = [0u8, 1, 0];
        let column = variable(RP_COLUMN_TEXT, text, &lengths, Some(&text_nulls));
        assert_eq!(
            values(&column, &lengths, 3, 0),
            vec![Ok(Value::Text("abc")), Ok(Value::Null), Ok(Value::Text("defgh"))]
        );
        assert_eq!(values(&column, &lengths, 3, 2), vec![Ok(Value::Text("defgh"))]);

        // inet: 4 and 16 bytes, each one host; another length is an argument error.
        let mut addresses = vec![10, 0, 0, 1];
        addresses.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        addresses.extend_from_slice(&[1, 2, 3]);
        let lengths = [4u32, 16, 3];
        let column = variable(RP_COLUMN_INET, &addresses, &lengths, None);
        assert_eq!(
            values(&column, &lengths, 3, 0),
            vec![
                Ok(Value::Inet(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 32)),
                Ok(Value::Inet(IpAddr::V6(Ipv6Addr::LOCALHOST), 128)),
                Err(RP_ERR_ARGUMENT)
            ]
        );

        let uuids: Vec<u8> = (0..32).collect();
        let column = fixed(RP_COLUMN_UUID, &uuids, None);
        let expected: [u8; 16] = std::array::from_fn(|i| 16 + i as u8);
        assert_eq!(values(&column, &[], 2, 1), vec![Ok(Value::Uuid(expected))]);
    }

    #[test]
    fn a_bad_column_is_an_error_not_a_value() {
        let bad_utf8 = [0xffu8, 0xfe];
        let lengths = [2u32];
        assert_eq!(
            values(&variable(RP_COLUMN_TEXT, &bad_utf8, &lengths, None), &lengths, 1, 0),
            vec![Err(RP_ERR_EVENT)]
        );
        // A variable-size column without lengths, an unknown kind.
        assert_eq!(values(&fixed(RP_COLUMN_BYTES, &bad_utf8, None), &[], 1, 0), vec![Err(RP_ERR_ARGUMENT)]);
        assert_eq!(values(&fixed(99, &bad_utf8, None), &[], 1, 0), vec![Err(RP_ERR_ARGUMENT)]);
    }

    #[test]
    fn a_batch_with_a_null_handle_or_the_wrong_column_count_queues_nothing() {
        let mut next = 7usize;
        // SAFETY: NULL handles are allowed and refused; `next` is writable.
        let status = unsafe {
            rp_stream_send_columns(
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null(),
                0,
                std::ptr::null(),
                std::ptr::null(),
                1,
                0,
                &mut next,
            )
        };
        assert_eq!((status, next), (RP_ERR_ARGUMENT, 0));
    }
}
