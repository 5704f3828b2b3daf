//! The load client: sends realistic synthetic events for one module and
//! waits until every one is acknowledged (`applianced load`).
//!
//! Event content is a pure function of (module, producer id, seq)
//! ([`crate::producer::synth`]), so running the same command twice resends the same
//! events, which the lane deduplicates. Retries through disconnects:
//! after each reconnect it resumes from the durable watermark the lane
//! reports in WELCOME.
//!
//! It speaks through the same client layer as a module's
//! [`crate::producer::stream::Stream`] (`ModuleClient`, `is_final`,
//! `welcome_regression`) but keeps no events in memory: it synthesizes them
//! again by seq. That is also why, after a WELCOME below its last ACK, it
//! resends the lost events in the same epoch (the fault suite counts on it),
//! where a `Stream`, which no longer holds them, continues in a new epoch.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::base::limits::{FRAME_EVENTS_MAX, RECORD_BYTES_MAX};
use crate::codec::frame::{self, ErrorCode, RECORD_HEADER_BYTES};
use crate::model::matrix::Module;
use crate::producer::client::{ClientError, ModuleClient, Reply, is_final};
use crate::producer::synth;

/// Target size of one EVENTS frame body: 256 KiB is about 1,000 events,
/// large enough to amortise the frame and small enough for fine credit.
pub const LOAD_FRAME_BYTES: usize = 256 * 1024;
/// Connection attempts before the load gives up.
pub const LOAD_CONNECT_ATTEMPTS_MAX: u32 = 100;
/// Wait between reconnect attempts (doubles up to the cap): a module's
/// stream's.
pub const LOAD_RETRY_MIN_MS: u64 = crate::producer::stream::PRODUCER_RETRY_MIN_MS;
pub const LOAD_RETRY_MAX_MS: u64 = crate::producer::stream::PRODUCER_RETRY_MAX_MS;
/// Silent closes before WELCOME in a row after which the load stops
/// (that is how a lane refuses a peer it does not admit).
pub const LOAD_HANDSHAKE_CLOSES_MAX: u32 = 3;
/// Without any reply for this long, the connection is considered dead.
pub const LOAD_STALL_MS: u64 = 30_000;

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub instance: String,
    pub module: Module,
    pub events: u64,
    pub producer_id: u64,
    pub epoch: u64,
    pub start_seq: u64,
    pub server_uid: u32,
    /// The events encoded beforehand (the bench); `None`: synthesized as sent.
    pub prepared: Option<Arc<Prepared>>,
}

/// One producer's events encoded once as EVENTS records, in seq order. A
/// load client that sends them spends its CPU on framing, checksums and the
/// socket, not on synthesis: the bench prepares them before its timed
/// window, so the producers' share of the two cores is what a module that
/// has its events ready costs. Memory: every record kept (about 270 bytes
/// per event for the default mix) plus one offset per event.
pub struct Prepared {
    module: Module,
    producer_id: u64,
    first_seq: u64,
    records: Vec<u8>,
    /// End offset in `records` of each event's record.
    ends: Vec<usize>,
}

impl Prepared {
    /// The same events `run_load` would synthesize for (module, producer) from `first_seq`.
    pub fn new(module: Module, producer_id: u64, first_seq: u64, events: u64) -> Prepared {
        let mut records = BytesMut::new();
        let mut fields = BytesMut::with_capacity(RECORD_BYTES_MAX);
        let mut ends = Vec::with_capacity(events as usize);
        for seq in first_seq..first_seq + events {
            synth::record(module, producer_id, seq, &mut fields, &mut records);
            ends.push(records.len());
        }
        Prepared { module, producer_id, first_seq, records: Vec::from(records), ends }
    }

    /// The encoded record of `seq` for (module, producer), if prepared.
    fn record(&self, module: Module, producer_id: u64, seq: u64) -> Option<&[u8]> {
        if (module, producer_id) != (self.module, self.producer_id) {
            return None;
        }
        let index = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        let end = *self.ends.get(index)?;
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i]);
        Some(&self.records[start..end])
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("module", &self.module)
            .field("producer_id", &self.producer_id)
            .field("first_seq", &self.first_seq)
            .field("events", &self.ends.len())
            .field("bytes", &self.records.len())
            .finish()
    }
}

impl LoadOptions {
    /// `events` events of one producer from seq 1, to a lane that must be
    /// owned by this process's own uid (the embedded default).
    pub fn new(instance: &str, module: Module, producer_id: u64, epoch: u64, events: u64) -> LoadOptions {
        LoadOptions {
            instance: instance.to_string(),
            module,
            events,
            producer_id,
            epoch,
            start_seq: 1,
            server_uid: crate::base::sys::effective_uid(),
            prepared: None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub sent: u64,
    pub resent: u64,
    pub acked: u64,
    pub rejected: u64,
    pub reconnects: u32,
    /// STATUS frames received saying the lane pushes back (spool full or
    /// unwritable, filesystem below its free-space reserve).
    pub pushed_back: u32,
    /// Each push-back code received, with the first reason given for it
    /// (one entry per code: bounded by the number of codes).
    pub push_back_reasons: Vec<(u16, String)>,
    pub elapsed: Duration,
    /// Per frame, microseconds from its send to the ACK covering it.
    pub ack_latencies_us: Vec<u64>,
    pub last_error: Option<String>,
    /// Acknowledged events the appliance lost: its STATUS `AcknowledgedLost`
    /// notices (recorded there with reason code 10), and WELCOMEs below this
    /// client's highest ACK (the load resent those events).
    pub lost: Vec<String>,
}

impl LoadReport {
    /// Every event acknowledged, and the appliance lost none it acknowledged.
    pub fn complete(&self, options: &LoadOptions) -> bool {
        self.acked == options.events && self.lost.is_empty()
    }

    pub fn latency_percentile_ms(&self, percentile: f64) -> f64 {
        if self.ack_latencies_us.is_empty() {
            return 0.0;
        }
        let mut sorted = self.ack_latencies_us.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() - 1) as f64 * percentile).round() as usize;
        sorted[index] as f64 / 1000.0
    }
}

struct Progress {
    end_seq: u64,
    acked_seq: u64,
    highest_sent: u64,
    in_flight: VecDeque<(u64, Instant)>,
}

/// Run the load to completion or until retries are exhausted.
pub fn run_load(options: &LoadOptions) -> LoadReport {
    let started = Instant::now();
    let mut report = LoadReport::default();
    let start = options.start_seq.max(1);
    let mut progress = Progress {
        end_seq: start + options.events - 1,
        acked_seq: start - 1,
        highest_sent: start - 1,
        in_flight: VecDeque::new(),
    };
    let mut retry_ms = LOAD_RETRY_MIN_MS;
    let mut handshake_closes = 0;
    for attempt in 0..LOAD_CONNECT_ATTEMPTS_MAX {
        if options.events == 0 || progress.acked_seq >= progress.end_seq {
            break;
        }
        if attempt > 0 {
            report.reconnects += 1;
            std::thread::sleep(Duration::from_millis(retry_ms));
            retry_ms = (retry_ms * 2).min(LOAD_RETRY_MAX_MS);
        }
        match session(options, &mut progress, &mut report) {
            Ok(()) => break,
            Err(ClientError::UntrustedServer { .. }) => break,
            // Never retry against a fence, the wrong lane or a gap we would cause.
            Err(ClientError::Refused { code, .. }) if is_final(code) => break,
            Err(ClientError::ClosedDuringHandshake) => {
                handshake_closes += 1;
                if handshake_closes >= LOAD_HANDSHAKE_CLOSES_MAX {
                    break;
                }
            }
            Err(_) => handshake_closes = 0,
        }
    }
    report.acked = progress.acked_seq.saturating_sub(start - 1).min(options.events);
    report.elapsed = started.elapsed();
    report
}

fn session(options: &LoadOptions, progress: &mut Progress, report: &mut LoadReport) -> Result<(), ClientError> {
    let result = session_inner(options, progress, report);
    if let Err(e) = &result {
        report.last_error = Some(e.to_string());
    }
    result
}

fn session_inner(options: &LoadOptions, progress: &mut Progress, report: &mut LoadReport) -> Result<(), ClientError> {
    let mut client = ModuleClient::connect(
        &options.instance,
        options.module,
        options.server_uid,
        options.producer_id,
        options.epoch,
    )?;
    if let Some((first, last)) = crate::producer::client::welcome_regression(
        (client.watermark_epoch, client.watermark_seq),
        (options.epoch, progress.acked_seq),
    ) {
        // The lane no longer has events it acknowledged: say so loudly, and
        // resend them (this client can: its events are a function of the seq).
        let lost = format!(
            "the appliance acknowledged seqs up to {last} but its WELCOME reports {}: seqs {first}..{last} of epoch {} were lost there; resent",
            first - 1,
            options.epoch
        );
        tracing::error!(producer = options.producer_id, lost, "acknowledged events lost by the appliance");
        report.lost.push(lost);
        progress.acked_seq = client.watermark_seq;
    }
    if client.watermark_epoch == options.epoch {
        progress.acked_seq = progress.acked_seq.max(client.watermark_seq);
    }
    // Replies that came with the WELCOME (a loss notice follows it at once).
    for reply in client.poll_replies(Duration::from_millis(1))? {
        note_reply(reply, options, progress, report);
    }
    if client.watermark_epoch == options.epoch && client.watermark_seq + 1 < options.start_seq {
        return Err(ClientError::Refused {
            code: ErrorCode::SequenceGap as u16,
            reason: format!(
                "the producer's durable watermark is {}; --start-seq {} would leave a gap",
                client.watermark_seq, options.start_seq
            ),
        });
    }
    // Resend everything not yet durable, from the first unacknowledged seq.
    let mut next = progress.acked_seq + 1;
    progress.in_flight.clear();
    let mut body = BytesMut::with_capacity(LOAD_FRAME_BYTES + RECORD_BYTES_MAX);
    let mut fields = BytesMut::with_capacity(RECORD_BYTES_MAX);
    let mut synthesized = BytesMut::with_capacity(RECORD_HEADER_BYTES + RECORD_BYTES_MAX);
    let mut records = BytesMut::with_capacity(LOAD_FRAME_BYTES + RECORD_BYTES_MAX);
    let mut last_reply = Instant::now();
    while progress.acked_seq < progress.end_seq {
        while next <= progress.end_seq
            && client.credit_bytes as usize >= LOAD_FRAME_BYTES.min(64 * 1024) + RECORD_BYTES_MAX
        {
            let limit = (client.credit_bytes as usize).min(LOAD_FRAME_BYTES);
            let first = next;
            records.clear();
            let mut count = 0u32;
            while next <= progress.end_seq && count < FRAME_EVENTS_MAX {
                let prepared = options.prepared.as_deref();
                let record = match prepared.and_then(|p| p.record(options.module, options.producer_id, next)) {
                    Some(record) => record,
                    None => {
                        synthesized.clear();
                        synth::record(options.module, options.producer_id, next, &mut fields, &mut synthesized);
                        &synthesized[..]
                    }
                };
                if 16 + records.len() + record.len() > limit && count > 0 {
                    break;
                }
                records.extend_from_slice(record);
                count += 1;
                next += 1;
            }
            body.clear();
            frame::encode_events_header(&mut body, first, count);
            body.extend_from_slice(&records);
            client.send_events(&body)?;
            let last = first + u64::from(count) - 1;
            if last > progress.highest_sent {
                let fresh = last - progress.highest_sent.max(first - 1);
                report.sent += fresh;
                report.resent += u64::from(count) - fresh;
                progress.highest_sent = last;
            } else {
                report.resent += u64::from(count);
            }
            progress.in_flight.push_back((last, Instant::now()));
        }
        for reply in client.poll_replies(Duration::from_millis(50))? {
            last_reply = Instant::now();
            note_reply(reply, options, progress, report);
        }
        if last_reply.elapsed() > Duration::from_millis(LOAD_STALL_MS) {
            return Err(ClientError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply from the lane")));
        }
    }
    Ok(())
}

fn note_reply(reply: Reply, options: &LoadOptions, progress: &mut Progress, report: &mut LoadReport) {
    match reply {
        Reply::Ack { epoch, durable_seq } if epoch == options.epoch => {
            progress.acked_seq = progress.acked_seq.max(durable_seq.min(progress.end_seq));
            while let Some((last, sent_at)) = progress.in_flight.front().copied() {
                if last > progress.acked_seq {
                    break;
                }
                report.ack_latencies_us.push(sent_at.elapsed().as_micros() as u64);
                progress.in_flight.pop_front();
            }
        }
        Reply::Ack { .. } | Reply::Credit(_) => {}
        Reply::Reject { .. } => report.rejected += 1,
        Reply::Status { code, reason } if code == crate::codec::frame::StatusCode::AcknowledgedLost as u16 => {
            tracing::error!(producer = options.producer_id, reason, "the appliance lost acknowledged events");
            report.lost.push(reason);
        }
        Reply::Status { code, reason } => {
            tracing::info!(code, reason, "lane status");
            if code != crate::codec::frame::StatusCode::Resumed as u16 {
                report.pushed_back += 1;
                if !report.push_back_reasons.iter().any(|(c, _)| *c == code) {
                    report.push_back_reasons.push((code, reason));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a load client sends for `seq` when it synthesizes as it goes.
    fn synthesized(module: Module, producer_id: u64, seq: u64) -> Vec<u8> {
        let mut out = BytesMut::new();
        synth::record(module, producer_id, seq, &mut BytesMut::new(), &mut out);
        out.to_vec()
    }

    #[test]
    fn prepared_records_are_the_records_synthesized_on_the_fly() {
        for module in Module::ALL {
            let prepared = Prepared::new(module, 7, 5, 300);
            for seq in 5..305 {
                assert_eq!(
                    prepared.record(module, 7, seq),
                    Some(&synthesized(module, 7, seq)[..]),
                    "{module:?} seq {seq}"
                );
            }
            // Outside the prepared range, or for another producer, the client synthesizes instead.
            assert_eq!(prepared.record(module, 7, 4), None);
            assert_eq!(prepared.record(module, 7, 305), None);
            assert_eq!(prepared.record(module, 8, 5), None);
        }
    }
}
