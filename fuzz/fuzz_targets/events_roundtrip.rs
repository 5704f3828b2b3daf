//! Fuzz target: EVENTS bodies round-trip through the client encoder and the
//! lane decoder.
//!
//! The fuzzer chooses a first sequence number and records (table,
//! field_count, source_id, event_time_us, field bytes) within the protocol's
//! caps. The body is built with `encode_events_header`/`encode_record`,
//! framed with `encode_frame`, decoded with `decode_frame` and
//! `decode_events`, and every record must come back exactly. A body one
//! byte short, or one byte long, must be refused.
#![no_main]

use applianced::codec::frame::{
    Kind, RECORD_HEADER_BYTES, decode_events, decode_frame, encode_events_header, encode_frame, encode_record,
};
use applianced::base::limits::{FRAME_BODY_BYTES_MAX, FRAME_EVENTS_MAX, RECORD_BYTES_MAX};
use bytes::BytesMut;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Bytes of the EVENTS header in front of the first record.
const EVENTS_HEADER_BYTES: usize = 16;

struct Record {
    table: u8,
    field_count: u16,
    source_id: [u8; 16],
    event_time_us: i64,
    fields: Vec<u8>,
}

fuzz_target!(|data: &[u8]| {
    if let Ok((first_seq, records)) = choose(&mut Unstructured::new(data)) {
        round_trip(first_seq, &records);
    }
});

fn choose(u: &mut Unstructured<'_>) -> Result<(u64, Vec<Record>)> {
    let mut records = Vec::new();
    let mut body_len = EVENTS_HEADER_BYTES;
    loop {
        let room = (FRAME_BODY_BYTES_MAX - body_len).min(RECORD_BYTES_MAX);
        if room < RECORD_HEADER_BYTES {
            break;
        }
        let table = u.arbitrary()?;
        let field_count = u.arbitrary()?;
        let source_id = u.arbitrary()?;
        let event_time_us = u.arbitrary()?;
        let fields_len = u.int_in_range(0..=room - RECORD_HEADER_BYTES)?.min(u.len());
        let fields = u.bytes(fields_len)?.to_vec();
        body_len += RECORD_HEADER_BYTES + fields.len();
        records.push(Record { table, field_count, source_id, event_time_us, fields });
        if records.len() == FRAME_EVENTS_MAX as usize || u.is_empty() || !u.arbitrary::<bool>()? {
            break;
        }
    }
    if records.is_empty() {
        return Err(libfuzzer_sys::arbitrary::Error::NotEnoughData);
    }
    // Any first_seq the protocol allows: 1 ..= 2^63 - 1 - count.
    let first_seq = u.int_in_range(1..=i64::MAX as u64 - records.len() as u64).unwrap_or(1);
    Ok((first_seq, records))
}

fn round_trip(first_seq: u64, records: &[Record]) {
    let mut body = BytesMut::new();
    encode_events_header(&mut body, first_seq, records.len() as u32);
    let mut raw_offsets = Vec::with_capacity(records.len());
    for r in records {
        raw_offsets.push(body.len());
        encode_record(&mut body, r.table, &r.source_id, r.event_time_us, r.field_count, &r.fields);
    }
    assert!(body.len() <= FRAME_BODY_BYTES_MAX);

    // Through the frame codec first, as on the wire.
    let mut wire = BytesMut::new();
    encode_frame(&mut wire, Kind::Events, &body);
    let frame = match decode_frame(&mut wire) {
        Ok(Some(frame)) => frame,
        other => panic!("encoded EVENTS frame did not decode: {other:?}"),
    };
    assert!(wire.is_empty(), "decode_frame left {} bytes", wire.len());
    assert_eq!(frame.kind, Kind::Events);
    assert_eq!(&frame.body[..], &body[..]);

    let events = match decode_events(&frame.body) {
        Ok(events) => events,
        Err(error) => panic!("encoded EVENTS body did not decode: {error}"),
    };
    assert_eq!(events.first_seq, first_seq);
    assert_eq!(events.records.len(), records.len());
    for ((got, want), offset) in events.records.iter().zip(records).zip(raw_offsets) {
        assert_eq!(got.table, want.table);
        assert_eq!(got.field_count, want.field_count);
        assert_eq!(got.source_id, &want.source_id);
        assert_eq!(got.event_time_us, want.event_time_us);
        assert_eq!(got.fields, &want.fields[..]);
        assert_eq!(got.raw, &body[offset..offset + RECORD_HEADER_BYTES + want.fields.len()]);
    }

    // Every strict prefix lacks bytes of the last record; a trailing byte is extra.
    assert!(decode_events(&body[..body.len() - 1]).is_err(), "a body one byte short decoded");
    let mut long = body.to_vec();
    long.push(0);
    assert!(decode_events(&long).is_err(), "a body with a trailing byte decoded");
}
