//! Fuzz target: the lane's view of a client byte stream.
//!
//! Arbitrary bytes go into a `BytesMut`; `decode_frame` is called until it
//! asks for more bytes or fails. Every frame is handed to the typed decoder
//! of its kind, and every record of an EVENTS frame to `validate_record`
//! for every module. Invariants: no panic; a decoded frame consumed exactly
//! its header and body; a body never exceeds FRAME_BODY_BYTES_MAX; a
//! truncated frame is "need more bytes", never an error or a frame.
//!
//! Random bytes almost never carry a correct CRC32C, so each input is
//! decoded twice: as given, and with the checksum of every well-framed
//! header rewritten to match its body (when that changes anything). The
//! second pass lets the fuzzer reach the typed decoders quickly.
#![no_main]

use applianced::codec::frame::{
    ErrorCode, Frame, HEADER_BYTES, Kind, RECORD_HEADER_BYTES, decode_ack, decode_credit, decode_error, decode_events,
    decode_frame, decode_hello, decode_reject, decode_welcome,
};
use applianced::base::limits::{FRAME_BODY_BYTES_MAX, FRAME_EVENTS_MAX, RECORD_BYTES_MAX};
use applianced::model::matrix::Module;
use applianced::model::schema::tables_of;
use applianced::codec::validate::{Invalid, validate_record};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    decode_stream(data);
    if let Some(fixed) = with_fixed_checksums(data) {
        decode_stream(&fixed);
    }
});

/// Offsets in the 16-byte frame header (src/frame.rs).
const KIND_OFFSET: usize = 3;
const BODY_LEN_OFFSET: usize = 8;
const CRC_OFFSET: usize = 12;

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(word)
}

/// `data` with the CRC of every complete frame (walking from the start by
/// the announced body lengths) set to match; `None` if nothing changed.
fn with_fixed_checksums(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = data.to_vec();
    let mut changed = false;
    let mut offset = 0;
    while out.len() - offset >= HEADER_BYTES {
        let body_len = be_u32(&out, offset + BODY_LEN_OFFSET) as usize;
        if body_len > FRAME_BODY_BYTES_MAX || out.len() - offset - HEADER_BYTES < body_len {
            break;
        }
        let body_start = offset + HEADER_BYTES;
        let crc = crc32c(&out[body_start..body_start + body_len]);
        if be_u32(&out, offset + CRC_OFFSET) != crc {
            out[offset + CRC_OFFSET..offset + CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
            changed = true;
        }
        offset = body_start + body_len;
    }
    changed.then_some(out)
}

/// CRC32C (Castagnoli, reflected, polynomial 0x82F63B78), bitwise. Kept
/// here rather than depending on the crc32c crate so the oracle does not
/// share code with the decoder it checks.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

fn decode_stream(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut offset = 0;
    loop {
        let before = buf.len();
        match decode_frame(&mut buf) {
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) must not consume input");
                if before >= HEADER_BYTES {
                    let body_len = be_u32(&buf, BODY_LEN_OFFSET) as usize;
                    assert!(before < HEADER_BYTES + body_len, "Ok(None) with a complete frame buffered");
                }
                return;
            }
            Err(_) => return,
            Ok(Some(frame)) => {
                let consumed = before - buf.len();
                let body_len = frame.body.len();
                assert!(body_len <= FRAME_BODY_BYTES_MAX, "body of {body_len} bytes");
                assert_eq!(consumed, HEADER_BYTES + body_len, "consumed bytes != header + body");
                let header = &data[offset..offset + HEADER_BYTES];
                assert_eq!(be_u32(header, BODY_LEN_OFFSET) as usize, body_len, "body length differs from header");
                assert_eq!(header[KIND_OFFSET], frame.kind as u8, "kind differs from header");
                assert_eq!(&frame.body[..], &data[offset + HEADER_BYTES..offset + consumed], "body is not the input");
                assert_eq!(crc32c(&frame.body), be_u32(header, CRC_OFFSET), "frame accepted with a wrong CRC32C");
                // One byte short of this frame is "need more", not an error.
                let mut short = BytesMut::from(&data[offset..offset + consumed - 1]);
                assert!(matches!(decode_frame(&mut short), Ok(None)), "truncated frame was not Ok(None)");
                offset += consumed;
                typed(&frame);
            }
        }
    }
}

fn typed(frame: &Frame) {
    let body = &frame.body[..];
    match frame.kind {
        Kind::Hello => {
            if decode_hello(body).is_ok() {
                assert_eq!(body.len(), 24);
                assert_eq!(&body[1..8], &[0; 7]);
            }
        }
        Kind::Welcome => {
            if decode_welcome(body).is_ok() {
                assert_eq!(body.len(), 24);
            }
        }
        Kind::Ack => {
            if decode_ack(body).is_ok() {
                assert_eq!(body.len(), 16);
            }
        }
        Kind::Credit => {
            if decode_credit(body).is_ok() {
                assert_eq!(body.len(), 8);
            }
        }
        Kind::Reject => {
            if let Ok((head, _reason)) = decode_reject(body) {
                assert_eq!(body.len(), 24 + usize::from(head.reason_len.get()));
            }
        }
        // STATUS has the ERROR body layout and decoder.
        Kind::Error | Kind::Status => {
            if let Ok((_code, _reason)) = decode_error(body) {
                assert_eq!(body.len(), 8 + usize::from(u16::from_be_bytes([body[2], body[3]])));
            }
        }
        Kind::Events => events(body),
    }
}

fn events(body: &[u8]) {
    let Ok(events) = decode_events(body) else {
        return;
    };
    let count = be_u32(body, 8);
    assert!((1..=FRAME_EVENTS_MAX).contains(&count));
    assert_eq!(events.records.len(), count as usize);
    assert!(events.first_seq >= 1 && events.first_seq + u64::from(count) <= i64::MAX as u64);
    let mut offset = 16;
    for record in &events.records {
        // Each record is the next slice of the body, header then fields.
        assert_eq!(record.raw, &body[offset..offset + record.raw.len()]);
        assert!(record.raw.len() <= RECORD_BYTES_MAX);
        assert_eq!(record.raw.len(), RECORD_HEADER_BYTES + record.fields.len());
        assert_eq!(&record.raw[RECORD_HEADER_BYTES..], record.fields);
        assert_eq!(be_u32(record.raw, 0) as usize + 4, record.raw.len());
        offset += record.raw.len();
        for module in Module::ALL {
            match validate_record(module, record) {
                Ok(table) => {
                    assert_eq!(table.module, module);
                    assert!(tables_of(module).nth(usize::from(record.table)).is_some_and(|t| t.name == table.name));
                    assert_eq!(table.columns.len(), usize::from(record.field_count));
                }
                Err(Invalid::Protocol(error)) => {
                    assert!(matches!(error.code, ErrorCode::FieldCount | ErrorCode::Malformed), "{error}");
                }
                Err(Invalid::Reject { .. }) => {}
            }
        }
    }
    assert_eq!(offset, body.len(), "records do not cover the body");
}
