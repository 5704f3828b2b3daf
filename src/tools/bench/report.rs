//! The bench report: one table of every variant's figures, the appliance's
//! own figures and the ratios, as text or as one JSON object.
//!
//! Consumes the [`Measured`] of every variant; produces a `String` or a
//! `serde_json::Value` for `run` to print. No I/O of its own.
//!
//! Invariant: everything printed was measured in this run; a ratio whose
//! variants are missing is left out (text) or null (JSON), never invented.

use std::fmt::Write as _;
use std::time::Duration;

use crate::model::matrix::Module;

use super::{Measured, Variant};

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ratio(numerator: &Measured, denominator: &Measured) -> f64 {
    numerator.events_per_s() / denominator.events_per_s().max(1e-9)
}

fn find(measured: &[Measured], variant: Variant) -> Option<&Measured> {
    measured.iter().find(|m| m.variant == variant)
}

/// The ratios compared across rounds: (name, numerator, denominator).
const ROUND_RATIOS: [(&str, Variant, Variant); 4] = [
    ("c_over_a", Variant::Appliance, Variant::CopyFromFile),
    ("c_over_a_prime", Variant::Appliance, Variant::CopyFromStdin),
    ("e_over_a", Variant::OneModuleBurst, Variant::CopyFromFile),
    ("a_prime_over_a", Variant::CopyFromStdin, Variant::CopyFromFile),
];

/// The ratios of the first round only (b and d run once).
const FIRST_ROUND_RATIOS: [(&str, Variant, Variant); 3] = [
    ("c_over_b", Variant::Appliance, Variant::Insert),
    ("d_over_c", Variant::ApplianceWithReader, Variant::Appliance),
    ("a_over_b", Variant::CopyFromFile, Variant::Insert),
];

/// The rounds in `measured`, in order.
fn rounds(measured: &[Measured]) -> Vec<u32> {
    let mut rounds: Vec<u32> = measured.iter().map(|m| m.round).collect();
    rounds.dedup();
    rounds
}

/// A ratio in one round, if both variants ran in it.
fn round_ratio(measured: &[Measured], round: u32, numerator: Variant, denominator: Variant) -> Option<f64> {
    let get = |v| measured.iter().find(|m| m.round == round && m.variant == v);
    Some(ratio(get(numerator)?, get(denominator)?))
}

/// Median, smallest and largest of `values` (None if empty).
pub(super) fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
    Some((median, sorted[0], sorted[n - 1]))
}

/// Each round ratio's values over the rounds.
fn ratio_series(measured: &[Measured]) -> Vec<(&'static str, Vec<f64>)> {
    ROUND_RATIOS
        .iter()
        .map(|(name, n, d)| {
            (*name, rounds(measured).into_iter().filter_map(|r| round_ratio(measured, r, *n, *d)).collect())
        })
        .collect()
}

pub(super) fn render_text(
    measured: &[Measured],
    requested: u64,
    per_module: u64,
    commit_streams: usize,
    total: Duration,
) -> String {
    let mut out = String::new();
    let events = per_module * Module::ALL.len() as u64;
    let _ = writeln!(
        out,
        "bench: {events} events per variant ({per_module} per module x {} modules, {requested} requested), one stream per module",
        Module::ALL.len()
    );
    let _ = writeln!(
        out,
        "bench: the appliance (c, d, e) commits each lane over {commit_streams} PostgreSQL connection(s) (--commit-streams)"
    );
    let _ = writeln!(
        out,
        "bench: MB = 10^6 bytes of the events' COPY BINARY tuples; busy cores = machine CPU s per s; \
         PG CPU = cluster processes' CPU s per 10^6 events; each variant after VACUUM (ANALYZE) + CHECKPOINT"
    );
    let _ = writeln!(
        out,
        "bench: c, d: seconds = until PostgreSQL committed the last event; all acked s = until the last ACK \
         (spool fdatasync)"
    );
    let _ = writeln!(
        out,
        "\n{:<30} {:>5} {:>9} {:>9} {:>8} {:>11} {:>8} {:>9} {:>11} {:>13} {:>10} {:>10}",
        "variant",
        "round",
        "events",
        "stored",
        "seconds",
        "events/s",
        "MB/s",
        "B/event",
        "WAL B/event",
        "table B/event",
        "busy cores",
        "PG CPU s/M"
    );
    for m in measured {
        let _ = writeln!(
            out,
            "{:<30} {:>5} {:>9} {:>9} {:>8.3} {:>11.0} {:>8.1} {:>9.1} {:>11.1} {:>13.1} {:>10.2} {:>10.2}",
            m.variant.label(),
            m.round,
            m.events,
            m.stored_rows,
            m.elapsed.as_secs_f64(),
            m.events_per_s(),
            m.mb_per_s(),
            m.bytes as f64 / m.events.max(1) as f64,
            m.window.wal_bytes as f64 / m.events.max(1) as f64,
            m.window.table_bytes as f64 / m.events.max(1) as f64,
            m.window.machine_cores,
            m.per_million(m.window.cluster_cpu_s),
        );
    }
    render_appliance_text(&mut out, measured);
    render_ratios_text(&mut out, measured);
    let _ = writeln!(
        out,
        "bench: whole run {:.1} s (cluster init, preparation, settling and verification included)",
        total.as_secs_f64()
    );
    out
}

fn render_appliance_text(out: &mut String, measured: &[Measured]) {
    let _ = writeln!(
        out,
        "\n{:<30} {:>5} {:>11} {:>10} {:>10} {:>14} {:>6} {:>18} {:>14} {:>16}",
        "appliance",
        "round",
        "all acked s",
        "ack p50 ms",
        "ack p99 ms",
        "CPU s/M events",
        "lanes",
        "lane VmHWM max MiB",
        "VmHWM sum MiB",
        "client CPU s/M"
    );
    for m in measured {
        let Some(a) = &m.appliance else { continue };
        let _ = writeln!(
            out,
            "{:<30} {:>5} {:>11.3} {:>10.1} {:>10.1} {:>14.2} {:>6} {:>18.1} {:>14.1} {:>16.2}{}",
            m.variant.label(),
            m.round,
            a.acked.as_secs_f64(),
            a.ack_p50_ms,
            a.ack_p99_ms,
            m.per_million(a.cpu_s),
            a.lanes,
            mib(a.lane_peak_rss_max_kib),
            mib(a.peak_rss_sum_kib),
            m.per_million(a.client_cpu_s),
            if a.peak_rss_reset { "" } else { "  (VmHWM not reset: peak since start)" },
        );
        for error in &a.load_errors {
            let _ = writeln!(out, "  load client error: {error}");
        }
    }
    if let Some(r) = find(measured, Variant::ApplianceWithReader).and_then(|m| m.reader.as_ref().map(|r| (m, r))) {
        let (m, reader) = r;
        let _ = writeln!(
            out,
            "{:<30} read {} rows of {} written, in {} keyset queries ({:.0} rows/s)",
            "d Core reader",
            reader.rows,
            m.events,
            reader.queries,
            reader.rows as f64 / m.elapsed.as_secs_f64().max(1e-9)
        );
    }
}

fn render_ratios_text(out: &mut String, measured: &[Measured]) {
    let _ = writeln!(out, "\nratios (events/s), per round:");
    for round in rounds(measured) {
        let mut line = format!("  round {round}:");
        for (name, n, d) in ROUND_RATIOS.iter().chain(if round == 1 { &FIRST_ROUND_RATIOS[..] } else { &[] }) {
            if let Some(value) = round_ratio(measured, round, *n, *d) {
                let _ = write!(line, "  {} = {value:.3}", name.replace("_over_", "/").replace("_prime", "'"));
            }
        }
        let _ = writeln!(out, "{line}");
    }
    for (name, values) in ratio_series(measured) {
        if let Some((median, min, max)) = spread(&values) {
            let _ = writeln!(
                out,
                "  {:<6} median {median:.3}  (min {min:.3}, max {max:.3}, {} rounds)",
                name.replace("_over_", "/").replace("_prime", "'"),
                values.len()
            );
        }
    }
}

fn measured_json(m: &Measured) -> serde_json::Value {
    let mut value = serde_json::json!({
        "events": m.events,
        "stored_rows": m.stored_rows,
        "bytes": m.bytes,
        "seconds": m.elapsed.as_secs_f64(),
        "events_per_s": m.events_per_s(),
        "mb_per_s": m.mb_per_s(),
        "wal_bytes": m.window.wal_bytes,
        "wal_bytes_per_event": m.window.wal_bytes as f64 / m.events.max(1) as f64,
        "table_bytes": m.window.table_bytes,
        "table_bytes_per_event": m.window.table_bytes as f64 / m.events.max(1) as f64,
        "machine_cpu_cores": m.window.machine_cores,
        "cluster_cpu_s_per_million": m.per_million(m.window.cluster_cpu_s),
        "bench_process_cpu_s_per_million": m.per_million(m.window.own_cpu_s),
        "round": m.round,
    });
    if let (Some(a), Some(object)) = (&m.appliance, value.as_object_mut()) {
        object.insert("all_acked_seconds".into(), a.acked.as_secs_f64().into());
        object.insert("ack_p50_ms".into(), a.ack_p50_ms.into());
        object.insert("ack_p99_ms".into(), a.ack_p99_ms.into());
        object.insert("appliance_cpu_s_per_million".into(), m.per_million(a.cpu_s).into());
        object.insert("appliance_minor_faults_per_million".into(), m.per_million(a.minor_faults as f64).into());
        object.insert("lanes".into(), a.lanes.into());
        object.insert("lane_peak_rss_max_kib".into(), a.lane_peak_rss_max_kib.into());
        object.insert("peak_rss_sum_kib".into(), a.peak_rss_sum_kib.into());
        object.insert("peak_rss_reset".into(), a.peak_rss_reset.into());
        object.insert("client_cpu_s_per_million".into(), m.per_million(a.client_cpu_s).into());
        object.insert("load_errors".into(), a.load_errors.clone().into());
    }
    if let (Some(r), Some(object)) = (&m.reader, value.as_object_mut()) {
        object.insert("reader_rows".into(), r.rows.into());
        object.insert("reader_queries".into(), r.queries.into());
    }
    value
}

pub(super) fn render_json(
    measured: &[Measured],
    requested: u64,
    per_module: u64,
    commit_streams: usize,
    total: Duration,
) -> serde_json::Value {
    // The first round's variants by key; every round's in "rounds".
    let mut variants = serde_json::Map::new();
    for m in measured.iter().filter(|m| m.round == 1) {
        variants.insert(m.variant.key().into(), measured_json(m));
    }
    let mut ratios = serde_json::Map::new();
    let mut spreads = serde_json::Map::new();
    for (name, values) in ratio_series(measured) {
        let value = spread(&values).map_or(serde_json::Value::Null, |(median, min, max)| {
            spreads
                .insert(name.into(), serde_json::json!({"median": median, "min": min, "max": max, "values": values}));
            median.into()
        });
        ratios.insert(name.into(), value);
    }
    for (name, n, d) in FIRST_ROUND_RATIOS {
        ratios.insert(name.into(), round_ratio(measured, 1, n, d).map_or(serde_json::Value::Null, Into::into));
    }
    let per_round: Vec<serde_json::Value> = rounds(measured)
        .into_iter()
        .map(|round| {
            let mut variants = serde_json::Map::new();
            for m in measured.iter().filter(|m| m.round == round) {
                variants.insert(m.variant.key().into(), measured_json(m));
            }
            serde_json::json!({"round": round, "variants": variants})
        })
        .collect();
    serde_json::json!({
        "events_requested": requested,
        "events_per_module": per_module,
        "modules": Module::ALL.len(),
        "commit_streams": commit_streams,
        "bytes_definition": "COPY BINARY tuple bytes of the events (stream header and trailer excluded)",
        "variants": variants,
        "ratios": ratios,
        "ratio_spread": spreads,
        "rounds": per_round,
        "run_seconds": total.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::spread;

    /// (median, smallest, largest)
    type Spread = Option<(f64, f64, f64)>;

    #[test]
    fn spread_is_the_median_and_the_extremes() {
        // (values, (median, min, max))
        let cases: [(&[f64], Spread); 4] = [
            (&[], None),
            (&[0.8], Some((0.8, 0.8, 0.8))),
            (&[0.9, 0.5, 0.7], Some((0.7, 0.5, 0.9))),
            (&[1.0, 0.4, 0.6, f64::NAN, 0.8], Some((0.7, 0.4, 1.0))),
        ];
        for (values, expected) in cases {
            assert_eq!(spread(values), expected, "{values:?}");
        }
    }
}
