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

pub(super) fn render_text(measured: &[Measured], requested: u64, per_module: u64, total: Duration) -> String {
    let mut out = String::new();
    let events = per_module * Module::ALL.len() as u64;
    let _ = writeln!(
        out,
        "bench: {events} events per variant ({per_module} per module x {} modules, {requested} requested), one stream per module",
        Module::ALL.len()
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
        "\n{:<30} {:>9} {:>9} {:>8} {:>11} {:>8} {:>9} {:>11} {:>13} {:>10} {:>10}",
        "variant",
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
            "{:<30} {:>9} {:>9} {:>8.3} {:>11.0} {:>8.1} {:>9.1} {:>11.1} {:>13.1} {:>10.2} {:>10.2}",
            m.variant.label(),
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
        "\n{:<30} {:>11} {:>10} {:>10} {:>14} {:>6} {:>18} {:>14} {:>16}",
        "appliance",
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
            "{:<30} {:>11.3} {:>10.1} {:>10.1} {:>14.2} {:>6} {:>18.1} {:>14.1} {:>16.2}{}",
            m.variant.label(),
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
    let get = |v| find(measured, v);
    let (Some(a), Some(b), Some(c), Some(d)) =
        (get(Variant::CopyFromFile), get(Variant::Insert), get(Variant::Appliance), get(Variant::ApplianceWithReader))
    else {
        return;
    };
    let _ = writeln!(
        out,
        "\nratios (events/s): c/a = {:.3}   c/b = {:.2}   d/c = {:.3}   a/b = {:.2} (c/b at c = a, the ceiling)",
        ratio(c, a),
        ratio(c, b),
        ratio(d, c),
        ratio(a, b)
    );
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
    });
    if let (Some(a), Some(object)) = (&m.appliance, value.as_object_mut()) {
        object.insert("all_acked_seconds".into(), a.acked.as_secs_f64().into());
        object.insert("ack_p50_ms".into(), a.ack_p50_ms.into());
        object.insert("ack_p99_ms".into(), a.ack_p99_ms.into());
        object.insert("appliance_cpu_s_per_million".into(), m.per_million(a.cpu_s).into());
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
    total: Duration,
) -> serde_json::Value {
    let mut variants = serde_json::Map::new();
    for m in measured {
        variants.insert(m.variant.key().into(), measured_json(m));
    }
    let get = |v| find(measured, v);
    let ratio_of = |n, d| match (get(n), get(d)) {
        (Some(n), Some(d)) => serde_json::Value::from(ratio(n, d)),
        _ => serde_json::Value::Null,
    };
    serde_json::json!({
        "events_requested": requested,
        "events_per_module": per_module,
        "modules": Module::ALL.len(),
        "bytes_definition": "COPY BINARY tuple bytes of the events (stream header and trailer excluded)",
        "variants": variants,
        "ratios": {
            "c_over_a": ratio_of(Variant::Appliance, Variant::CopyFromFile),
            "c_over_b": ratio_of(Variant::Appliance, Variant::Insert),
            "d_over_c": ratio_of(Variant::ApplianceWithReader, Variant::Appliance),
            "a_over_b": ratio_of(Variant::CopyFromFile, Variant::Insert),
        },
        "run_seconds": total.as_secs_f64(),
    })
}
