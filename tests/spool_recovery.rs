//! Spool recovery, exhaustively, on the real `Spool` and real files: the
//! last record of a segment truncated at every byte, and every bit of its
//! header and trailer (and of a sample of its payload, the whole summary
//! included) flipped, then the same flips on a record in the middle. Each
//! case must be classified from the evidence on disk: an append cut short
//! is truncated and nothing acknowledged is lost; a complete record whose
//! payload changed is reported as damaged, with its events named when its
//! summary survived; a damaged header or trailer around an intact payload
//! loses nothing. No case may drop a complete record silently.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use applianced::codec::copy::CommonValues;
use applianced::lane::batch::{Batch, ProducerRange, salvage_ranges, spool_ranges};
use applianced::model::matrix::Module;
use applianced::model::schema::tables_of;
use applianced::storage::spool::{
    HEADER_BYTES, Location, Readers, Recovered, Recovery, Spool, TRAILER_BYTES, segment_files,
};

type Ranges = Vec<ProducerRange>;

fn open(dir: &Path) -> (Spool, Recovery<Ranges>) {
    Spool::open(dir, 64 * 1024 * 1024, Readers { summarize: spool_ranges, salvage: salvage_ranges }).unwrap()
}

/// A batch of `rows` synthetic DPI events of producer 7, epoch 1, from `first_seq`.
fn batch(first_seq: u64, rows: u64) -> Batch {
    let module = Module::Dpi;
    let tables: Vec<_> = tables_of(module).collect();
    let mut batch = Batch::new(module, 0);
    for seq in first_seq..first_seq + rows {
        let mut fields = bytes::BytesMut::new();
        let event = applianced::producer::synth::synthesize(module, 7, seq, &mut fields);
        let common = CommonValues {
            producer_id: 7,
            producer_epoch: 1,
            producer_seq: seq as i64,
            source_id: event.source_id,
            event_time_us: event.event_time_us,
            ingest_time_us: 1_796_400_000_000_000,
        };
        let index = usize::from(event.table);
        batch.add_row(index, tables[index], &common, &fields);
    }
    batch
}

struct Fixture {
    dir: PathBuf,
    segment: PathBuf,
    clean: Vec<u8>,
    locations: Vec<Location>,
    ranges: Vec<Ranges>,
}

/// Three durable records (ids 1..3) of 5 events each, in one segment.
fn fixture(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("spool-recovery-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut spool, _) = open(&dir);
    let mut locations = Vec::new();
    let mut ranges = Vec::new();
    for n in 0..3 {
        let batch = batch(1 + 5 * n, 5);
        locations.push(spool.append_parts(&batch.spool_parts().slices()).unwrap());
        ranges.push(batch.ranges.clone());
    }
    spool.sync().unwrap();
    drop(spool);
    let segment = segment_files(&dir).unwrap().pop().unwrap().1;
    let clean = std::fs::read(&segment).unwrap();
    Fixture { dir, segment, clean, locations, ranges }
}

impl Fixture {
    /// Write `bytes` as the segment, clear the quarantine, reopen.
    fn recover(&self, bytes: &[u8]) -> Recovery<Ranges> {
        std::fs::write(&self.segment, bytes).unwrap();
        let _ = std::fs::remove_dir_all(self.dir.join("quarantine"));
        open(&self.dir).1
    }

    /// Record `index`'s start, payload end and trailer end.
    fn record_extent(&self, index: usize) -> (usize, usize, usize) {
        let location = self.locations[index];
        let start = location.offset as usize;
        let payload_end = start + HEADER_BYTES + location.length as usize;
        (start, payload_end, payload_end + TRAILER_BYTES)
    }

    /// Where record `index`'s padding to a block ends (the next record starts).
    fn padded_end(&self, index: usize) -> usize {
        self.locations[index].offset as usize + Spool::record_bytes(self.locations[index].length as usize) as usize
    }

    /// Bytes of record `index`'s payload before its summary CRC ends.
    fn summary_bytes(&self, index: usize) -> usize {
        8 + 40 * self.ranges[index].len() + 4
    }
}

/// What recovery made of records 1..3: per id, intact or damaged (with
/// what it salvaged), in order.
#[derive(Debug, PartialEq)]
enum Seen {
    Intact(u64),
    Damaged(Option<u64>, Option<Ranges>),
}

fn seen(recovery: &Recovery<Ranges>) -> Vec<Seen> {
    recovery
        .entries
        .iter()
        .map(|e| match e {
            Recovered::Record(location, _) => Seen::Intact(location.id),
            Recovered::Damaged(d) => Seen::Damaged(d.id, d.salvaged.clone()),
        })
        .collect()
}

#[test]
fn the_last_record_truncated_at_every_byte_is_a_torn_append() {
    let f = fixture("truncate");
    let (start, _, end) = f.record_extent(2);
    for cut in start..end {
        let recovery = f.recover(&f.clean[..cut]);
        assert_eq!(seen(&recovery), vec![Seen::Intact(1), Seen::Intact(2)], "cut at {cut}");
        assert_eq!(recovery.truncated_bytes, (cut - start) as u64, "cut at {cut}");
        assert_eq!(std::fs::metadata(&f.segment).unwrap().len(), start as u64, "cut at {cut}");
    }
    // A crash after an O_DIRECT write grew the file: the header and part
    // of the payload on disk, zeros to the record's padded end. Torn.
    let padded = f.padded_end(2);
    // (The payload ends with zero bytes, the count of quarantined events:
    // the cuts leave bytes of the COPY data unwritten.)
    let payload_end = f.record_extent(2).1;
    for written in [start + HEADER_BYTES, start + HEADER_BYTES + 1, (start + payload_end) / 2] {
        let mut bytes = f.clean[..written].to_vec();
        bytes.resize(padded, 0);
        let recovery = f.recover(&bytes);
        assert_eq!(seen(&recovery), vec![Seen::Intact(1), Seen::Intact(2)], "{written} bytes written");
        assert_eq!(recovery.truncated_bytes, (padded - start) as u64, "{written} bytes written");
        assert_eq!(std::fs::metadata(&f.segment).unwrap().len(), start as u64);
    }
    // Cut inside the padding after a trailer on disk: complete, intact.
    assert_eq!(f.padded_end(2), f.clean.len());
    for cut in end..f.clean.len() {
        let recovery = f.recover(&f.clean[..cut]);
        assert_eq!(seen(&recovery), vec![Seen::Intact(1), Seen::Intact(2), Seen::Intact(3)], "cut at {cut}");
        assert_eq!(recovery.truncated_bytes, 0, "cut at {cut}");
    }
    // Zeros where the append's pages were never written (a crash after the
    // file grew): torn as well, whatever their length.
    for zeros in [1, HEADER_BYTES, end - start, 4096] {
        let mut bytes = f.clean[..start].to_vec();
        bytes.extend(std::iter::repeat_n(0u8, zeros));
        let recovery = f.recover(&bytes);
        assert_eq!(seen(&recovery), vec![Seen::Intact(1), Seen::Intact(2)], "{zeros} zero bytes");
    }
    std::fs::remove_dir_all(&f.dir).unwrap();
}

/// Flip every bit of the header and trailer of record `index`, and of its
/// payload's summary, every 37th payload byte after it and every 97th
/// byte of its padding (which carries nothing: no effect); classify.
fn flip_everywhere(f: &Fixture, index: usize) -> usize {
    let (start, payload_end, end) = f.record_extent(index);
    let payload_start = start + HEADER_BYTES;
    let summary_end = payload_start + f.summary_bytes(index);
    let positions: Vec<usize> = (start..payload_start)
        .chain(payload_start..summary_end)
        .chain((summary_end..payload_end).step_by(37))
        .chain(payload_end..end)
        .chain((end..f.padded_end(index)).step_by(97))
        .collect();
    let id = index as u64 + 1;
    let mut cases = 0;
    for at in positions {
        for bit in 0..8 {
            let mut bytes = f.clean.clone();
            bytes[at] ^= 1 << bit;
            let recovery = f.recover(&bytes);
            let mut expected: Vec<Seen> = (1..=3).map(Seen::Intact).collect();
            if (payload_start..payload_end).contains(&at) {
                let salvaged = (at >= summary_end).then(|| f.ranges[index].clone());
                expected[index] = Seen::Damaged(Some(id), salvaged);
            }
            assert_eq!(seen(&recovery), expected, "record {id}, bit {bit} of byte {at}");
            assert_eq!(recovery.truncated_bytes, 0, "record {id}, bit {bit} of byte {at}: nothing truncated");
            let repaired = !(payload_start..payload_end).contains(&at) && at < end;
            assert_eq!(recovery.repaired, u64::from(repaired), "record {id}, bit {bit} of byte {at}");
            cases += 1;
        }
    }
    cases
}

#[test]
fn every_bit_of_the_last_record_flipped_is_damage_never_a_torn_append() {
    let f = fixture("flip-last");
    let cases = flip_everywhere(&f, 2);
    assert!(cases > (HEADER_BYTES + TRAILER_BYTES) * 8, "{cases} cases");
    std::fs::remove_dir_all(&f.dir).unwrap();
}

#[test]
fn every_bit_of_a_middle_record_flipped_is_damage_and_the_rest_survives() {
    let f = fixture("flip-middle");
    flip_everywhere(&f, 1);
    std::fs::remove_dir_all(&f.dir).unwrap();
}
