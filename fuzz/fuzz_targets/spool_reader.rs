//! Fuzz target: the spool reader, on bytes as recovery finds them on disk.
//!
//! Arbitrary bytes are scanned as a segment (`spool::record::scan`), as the
//! newest segment and as a closed one, from a first id the input chooses.
//! Every extent's payload goes to the batch readers (`spool_ranges`,
//! `salvage_ranges`, `Batch::from_spool_payload`). Invariants: no panic;
//! the extents tile the bytes in order, up to the torn tail if any, which
//! only the newest segment may have; ids strictly increase; an intact
//! record's payload matches its CRC.
//!
//! Random bytes almost never form a record, so a second pass wraps the input
//! as the payload of one well-formed record (and the rest as a tail) to
//! reach the payload readers and the record rules.
#![no_main]

use applianced::lane::batch::{Batch, salvage_ranges, spool_ranges};
use applianced::model::matrix::Module;
use applianced::storage::spool::record::{Extent, encode, scan};
use libfuzzer_sys::fuzz_target;
use zerocopy::IntoBytes;

fuzz_target!(|data: &[u8]| {
    let first_id = data.first().map_or(1, |b| u64::from(*b) + 1);
    check(data, first_id);
    // One record around the input's first half, the rest as what follows it.
    let split = data.len() / 2;
    let (header, trailer) = encode(first_id, &[&data[..split]]);
    let mut wrapped = header.as_bytes().to_vec();
    wrapped.extend_from_slice(&data[..split]);
    wrapped.extend_from_slice(trailer.as_bytes());
    wrapped.extend_from_slice(&data[split..]);
    check(&wrapped, first_id);
});

fn check(bytes: &[u8], first_id: u64) {
    for newest in [true, false] {
        let Ok(found) = scan(bytes, newest, first_id) else { continue };
        let mut at = 0;
        let mut last_id = first_id.saturating_sub(1);
        for extent in &found.extents {
            let (offset, end, id, payload) = match extent {
                Extent::Intact(r) => {
                    assert_eq!(crc32c::crc32c(&bytes[r.payload.clone()]), r.payload_crc32c);
                    (r.offset, r.end, Some(r.id), Some(r.payload.clone()))
                }
                Extent::Damaged(d) => (d.offset, d.end, d.id, d.payload.clone()),
            };
            assert_eq!(offset, at, "extents tile the segment");
            assert!(end > offset && end <= bytes.len());
            if let Some(id) = id {
                assert!(id > last_id || (id == first_id && last_id < first_id), "ids increase");
                last_id = id;
            }
            if let Some(payload) = payload {
                let payload = &bytes[payload];
                let _ = spool_ranges(payload);
                let _ = salvage_ranges(payload);
                let _ = Batch::from_spool_payload(Module::Dpi, 0, payload);
            }
            at = end;
        }
        match &found.torn {
            Some(torn) => {
                assert!(newest, "only the newest segment has a torn tail");
                assert_eq!(torn.offset, at);
            }
            None => assert_eq!(at, bytes.len(), "every byte is classified"),
        }
    }
}
