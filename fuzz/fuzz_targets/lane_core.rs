//! Fuzz target: the lane's state machine driven the way a driver drives
//! it, by an arbitrary sequence of events: connections admitted, bytes
//! from them (arbitrary, or a well-formed HELLO or EVENTS frame the input
//! parametrizes), end of stream, connections gone, time passing, the
//! PostgreSQL link connecting, bytes from it (arbitrary, or the replies of
//! the scripted backend to what the lane sent), its loss, spool faults
//! (a failed append or fdatasync), and outputs taken and sent. The spool
//! is the in-memory one (`MemorySpool`).
//!
//! Invariants: no panic; after every event the core's own invariants hold
//! (`LaneCore::check_invariants`: credit accounting, windows, the lane
//! budget, producers' active connections); no connection's queued output
//! passes its bound by more than one frame's replies.
#![no_main]

use applianced::codec::frame::{self, Kind};
use applianced::lane::ingress::{PeerGrant, PeerPolicy};
use applianced::lane::scripted::ScriptedDb;
use applianced::lane::core::{LaneCore, Now};
use applianced::base::limits::{CONNECTION_OUTPUT_BYTES_MAX, FRAME_EVENTS_MAX, LANE_CONNECTIONS_MAX, REJECT_FRAME_BYTES_MAX};
use applianced::model::matrix::Module;
use applianced::storage::spool::{Fault, MemorySpool, Recovery};
use applianced::base::sys::PeerCred;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let spool = MemorySpool::new(64 << 20, 1 << 40);
    let mut db = ScriptedDb::new();
    let policy = PeerPolicy { grants: vec![PeerGrant::parse("uid:1000:0-1000").unwrap()] };
    let mut now = Now { mono_ms: 0, wall_us: 1_800_000_000_000_000 };
    let mut core = LaneCore::new(Module::Dpi, policy, now, Box::new(spool.clone()), Recovery::default(), 0);
    // Two commit streams: the scripted server's connection of the same index answers each.
    const STREAMS: usize = 2;
    core.set_commit_streams(STREAMS);
    let mut input = data.iter().copied();
    let mut next = move || input.next();
    let mut seq = [1u64; LANE_CONNECTIONS_MAX];
    while let Some(op) = next() {
        match op % 11 {
            0 => {
                let _ = core.admit(PeerCred { pid: 7, uid: 1000, gid: 1000 }, false, now);
            }
            1 => {
                let Some(slot) = next().map(|b| b as usize % LANE_CONNECTIONS_MAX) else { break };
                let len = next().unwrap_or(0) as usize;
                let bytes: Vec<u8> = (0..len).map_while(|_| next()).collect();
                core.on_client_bytes(slot, &bytes, now);
            }
            2 => {
                let Some(slot) = next().map(|b| b as usize % LANE_CONNECTIONS_MAX) else { break };
                let producer = u64::from(next().unwrap_or(0)) % 1200;
                let mut hello = BytesMut::new();
                frame::encode_hello(&mut hello, 2, producer, u64::from(next().unwrap_or(1)));
                core.on_client_bytes(slot, &hello, now);
            }
            3 => {
                let Some(slot) = next().map(|b| b as usize % LANE_CONNECTIONS_MAX) else { break };
                let count = u32::from(next().unwrap_or(1)).clamp(1, 64);
                let producer = u64::from(next().unwrap_or(0)) % 1200;
                let first = if next().unwrap_or(0) % 4 == 0 { 1 } else { seq[slot] };
                let mut body = BytesMut::new();
                frame::encode_events_header(&mut body, first, count);
                for s in first..first + u64::from(count) {
                    let mut fields = BytesMut::new();
                    let event = applianced::producer::synth::synthesize(Module::Dpi, producer, s, &mut fields);
                    let time = if next().unwrap_or(1) == 0 { -5 } else { event.event_time_us };
                    frame::encode_record(&mut body, event.table, &event.source_id, time, event.field_count, &fields);
                }
                seq[slot] = first + u64::from(count);
                let mut wire = BytesMut::new();
                frame::encode_frame(&mut wire, Kind::Events, &body);
                core.on_client_bytes(slot, &wire, now);
            }
            4 => {
                let Some(slot) = next().map(|b| b as usize % LANE_CONNECTIONS_MAX) else { break };
                if next().unwrap_or(0) % 2 == 0 {
                    core.on_client_eof(slot);
                } else {
                    core.client_gone(slot);
                }
            }
            5 => {
                now.mono_ms += u64::from(next().unwrap_or(1)) * 97;
                now.wall_us += 1000;
                core.tick(now);
            }
            6 => {
                let link = next().unwrap_or(0) as usize % STREAMS;
                if !core.pg_link_connected(link) {
                    if core.pg_wants_connect(link, now) {
                        core.pg_connect_requested(link);
                        db.connection_lost_on(link);
                        let _ = core.pg_connected(BytesMut::new());
                    }
                } else {
                    db.connection_lost_on(link);
                    core.pg_lost(link, "fuzz", now);
                }
            }
            7 => {
                let link = next().unwrap_or(0) as usize % STREAMS;
                let len = next().unwrap_or(0) as usize;
                let bytes: Vec<u8> = (0..len).map_while(|_| next()).collect();
                if core.pg_link_connected(link) {
                    core.on_pg_bytes(link, &bytes, now);
                }
            }
            8 => {
                // The scripted backend answers what the lane sent.
                let link = next().unwrap_or(0) as usize % STREAMS;
                if let Some(out) = core.take_pg_output(link) {
                    let replies = db.serve_on(link, &out.into_vec());
                    core.pg_sent(link);
                    core.on_pg_bytes(link, &replies, now);
                }
            }
            9 => match next().unwrap_or(0) % 4 {
                0 => spool.inject(Fault::Append),
                1 => spool.inject(Fault::Sync),
                2 => db.fail_next_statement("40001"),
                _ => spool.set_available(u64::from(next().unwrap_or(0)) << 12),
            },
            _ => {
                // The driver writes everything queued (for the slots the
                // input names; the others' peers do not read).
                let readers = next().unwrap_or(0xff);
                for slot in 0..LANE_CONNECTIONS_MAX {
                    if readers & (1 << (slot % 8)) == 0 {
                        continue;
                    }
                    if let Some(out) = core.take_client_output(slot) {
                        assert!(
                            out.len() <= CONNECTION_OUTPUT_BYTES_MAX + FRAME_EVENTS_MAX as usize * REJECT_FRAME_BYTES_MAX + 4096,
                            "slot {slot}: {} bytes of replies queued",
                            out.len()
                        );
                        core.client_sent(slot);
                    }
                    if core.client_must_abort(slot) || core.client_should_close(slot) {
                        core.client_gone(slot);
                    }
                }
                for link in 0..STREAMS {
                    if core.take_pg_output(link).is_some() {
                        core.pg_sent(link);
                    }
                }
            }
        }
        core.check_invariants();
        if core.fatal().is_some() {
            // The driver returns the error and the lane process exits.
            break;
        }
    }
});
