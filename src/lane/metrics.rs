//! A lane's metrics: what it counts, and their exposition in the
//! OpenMetrics / Prometheus text format (sans-I/O).
//!
//! The lane sends its values to the supervisor every
//! `LANE_METRICS_INTERVAL_MS` as `key = value` lines
//! (`LaneCore::metrics_lines`, in the order of [`LANE_METRICS`]); the
//! supervisor keeps only lines whose key is listed here and whose value is
//! an unsigned integer, and writes them to `run/lane-<module>.metrics`
//! (`control::launch::metrics_path`); `applianced metrics` renders every
//! lane's file ([`render`]). Counters count from the lane process's start
//! (a restarted lane starts again at 0, which Prometheus reads as a reset).

use crate::model::matrix::Module;

/// Counter or gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// One lane metric: its key in the lane's report, its kind, its help text,
/// and the divisor to its exposed unit (milliseconds to seconds: 1000).
#[derive(Debug, Clone, Copy)]
pub struct LaneMetric {
    pub key: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
    pub divisor: u64,
}

const fn counter(key: &'static str, help: &'static str) -> LaneMetric {
    LaneMetric { key, kind: MetricKind::Counter, help, divisor: 1 }
}

const fn gauge(key: &'static str, help: &'static str) -> LaneMetric {
    LaneMetric { key, kind: MetricKind::Gauge, help, divisor: 1 }
}

/// Every lane metric, in the order the lane reports them.
pub const LANE_METRICS: [LaneMetric; 26] = [
    counter(
        "events_acknowledged",
        "Events acknowledged to producers (durable in the lane's spool), rejected ones included.",
    ),
    counter("events_committed", "Events committed into PostgreSQL (rows of event tables and quarantine rows)."),
    counter("events_rejected", "Events rejected by validation (stored in the module's quarantine table)."),
    counter("events_lost", "Acknowledged events recorded as lost (damaged spool records)."),
    counter("duplicates_skipped", "Events received again and skipped (already held or durable)."),
    counter("batches_committed", "Transactions of spooled records committed."),
    counter(
        "transactions_overlapped",
        "Transactions whose COPY went out while an earlier transaction of the lane was still in flight.",
    ),
    counter("batches_read_back", "Spooled batches read back from disk to be sent (beyond the cache)."),
    counter("connections_admitted", "Connections admitted (peer credentials granted on this lane) and given a slot."),
    counter("connections_refused", "Connections refused (peer not admitted, draining, or no slot)."),
    counter("connections_evicted", "Connections whose slot was given to a new one."),
    counter("connections_timed_out", "Connections closed for a missed deadline (no HELLO, idle, replies not read)."),
    counter("protocol_errors", "Connections closed with an ERROR frame."),
    counter("database_resets", "PostgreSQL requests failed or connections lost (retried with backoff)."),
    counter("producers_forgotten", "Idle producers dropped from the lane's bounded producer table."),
    counter("credit_stalls", "EVENTS frames that used up their connection's credit (the producer waited for CREDIT)."),
    gauge("connections_open", "Producer connections open."),
    gauge("producers", "Producers in the lane's producer table."),
    gauge("spool_used_bytes", "Bytes of the lane's spool segments."),
    gauge("spool_quota_bytes", "The lane's spool quota."),
    gauge("unsent_records", "Spooled records not yet committed into PostgreSQL."),
    LaneMetric {
        key: "commit_lag_ms",
        kind: MetricKind::Gauge,
        help: "Age of the oldest acknowledged record not yet committed (0: none waiting).",
        divisor: 1000,
    },
    gauge("pushed_back", "The STATUS code producers are pushed back with (0: none)."),
    gauge("postgresql_connected", "Whether the lane holds a PostgreSQL connection (1) or not (0)."),
    gauge("commit_streams_connected", "PostgreSQL connections the lane holds (of its commit streams)."),
    gauge("commit_streams_active", "Commit streams taking new transactions (the supervisor's share for this lane)."),
];

/// Report keys `database_errors.<SQLSTATE>`: refusals by SQLSTATE,
/// exposed as `applianced_lane_database_errors_total{lane,sqlstate}`.
pub const DATABASE_ERRORS_PREFIX: &str = "database_errors.";

/// `text` as a report value: printable ASCII, no quote or backslash (each
/// other byte a `?`), cut to `LANE_LAST_ERROR_BYTES_MAX`.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '?' })
        .take(crate::base::limits::LANE_LAST_ERROR_BYTES_MAX)
        .collect()
}

/// Whether `key` is a `database_errors.<SQLSTATE>` key the supervisor keeps.
fn is_sqlstate_key(key: &str) -> bool {
    key.strip_prefix(DATABASE_ERRORS_PREFIX).is_some_and(|code| {
        code == "other" || (code.len() == 5 && code.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()))
    })
}

/// The exposed name of a metric: `applianced_lane_<key>`, a millisecond
/// key in seconds (a counter's samples add `_total`).
pub fn exposed_name(metric: &LaneMetric) -> String {
    let base = metric.key.strip_suffix("_ms").map_or_else(|| metric.key.to_string(), |k| format!("{k}_seconds"));
    format!("applianced_lane_{base}")
}

/// What the supervisor recorded of one lane: its values (key → value) and
/// how old they are.
#[derive(Debug, Clone)]
pub struct LaneSample {
    pub module: Module,
    pub values: std::collections::BTreeMap<String, u64>,
    /// Seconds since the lane last reported (None: never).
    pub age_s: Option<f64>,
    /// The lane's last database error, if it had one.
    pub last_error: Option<String>,
}

/// Keep only the lines of a lane's report that name a known metric with an
/// unsigned integer value (what a compromised lane sends can change its own
/// numbers, nothing else).
pub fn accepted_lines(report: &str) -> String {
    let mut metrics = 0;
    let mut sqlstates = 0;
    let mut last_error = None;
    let mut out = String::new();
    for line in report.lines() {
        let Some((key, value)) = line.split_once('=') else { continue };
        let (key, value) = (key.trim(), value.trim());
        if key == "last_error" {
            let text = value.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
            last_error = text.map(printable);
        } else if value.parse::<u64>().is_err() {
            continue;
        } else if LANE_METRICS.iter().any(|m| m.key == key) && metrics < LANE_METRICS.len() {
            metrics += 1;
            out.push_str(&format!("{key} = {value}\n"));
        } else if is_sqlstate_key(key) && sqlstates <= crate::base::limits::LANE_SQLSTATES_MAX {
            sqlstates += 1;
            out.push_str(&format!("{key} = {value}\n"));
        }
    }
    if let Some(text) = last_error {
        out.push_str(&format!("last_error = \"{text}\"\n"));
    }
    out
}

/// The OpenMetrics text exposition of every lane's sample, ending in `# EOF`.
pub fn render(samples: &[LaneSample]) -> String {
    let mut out = render_families(samples);
    out.push_str("# EOF\n");
    out
}

/// The lanes' metric families, without the closing `# EOF`
/// (`control::exposition` adds the appliance's own).
pub fn render_families(samples: &[LaneSample]) -> String {
    let mut out = String::new();
    for metric in &LANE_METRICS {
        let name = exposed_name(metric);
        let kind = match metric.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        };
        out.push_str(&format!("# TYPE {name} {kind}\n# HELP {name} {}\n", metric.help));
        let sample_name = if metric.kind == MetricKind::Counter { format!("{name}_total") } else { name };
        for sample in samples {
            if let Some(value) = sample.values.get(metric.key) {
                let value = if metric.divisor == 1 {
                    value.to_string()
                } else {
                    format!("{:.3}", *value as f64 / metric.divisor as f64)
                };
                out.push_str(&format!("{sample_name}{{lane=\"{}\"}} {value}\n", sample.module.name()));
            }
        }
    }
    let name = "applianced_lane_database_errors";
    out.push_str(&format!(
        "# TYPE {name} counter\n# HELP {name} Requests PostgreSQL refused, by SQLSTATE (each retried with backoff).\n"
    ));
    for sample in samples {
        for (key, value) in &sample.values {
            if let Some(sqlstate) = key.strip_prefix(DATABASE_ERRORS_PREFIX) {
                out.push_str(&format!(
                    "{name}_total{{lane=\"{}\",sqlstate=\"{sqlstate}\"}} {value}\n",
                    sample.module.name()
                ));
            }
        }
    }
    let name = "applianced_lane_report_age_seconds";
    out.push_str(&format!(
        "# TYPE {name} gauge\n# HELP {name} Seconds since the lane last reported its metrics (a lane that stopped reporting is stale).\n"
    ));
    for sample in samples {
        if let Some(age) = sample.age_s {
            out.push_str(&format!("{name}{{lane=\"{}\"}} {age:.3}\n", sample.module.name()));
        }
    }
    out
}

/// `applianced status`: one line per lane from two reports `seconds`
/// apart: acknowledged and committed events per second, commit lag,
/// unsent records, spool use, open connections, PostgreSQL link, push-back
/// and the report's age. A counter that went down means the lane restarted
/// between the reports (its rates show `restart`).
pub fn status_table(before: &[LaneSample], after: &[LaneSample], seconds: f64) -> String {
    let mut out = format!(
        "{:<14} {:>10} {:>12} {:>10} {:>7} {:>19} {:>5} {:>4} {:>11} {:>7}\n",
        "lane", "acked/s", "committed/s", "lag", "unsent", "spool MiB", "conns", "pg", "pushed back", "report"
    );
    for sample in after {
        let value = |key: &str| sample.values.get(key).copied().unwrap_or(0);
        let earlier = before.iter().find(|b| b.module == sample.module);
        let rate = |key: &str| -> String {
            match earlier.and_then(|b| b.values.get(key)) {
                Some(old) if *old <= value(key) && seconds > 0.0 => {
                    format!("{:.0}", (value(key) - old) as f64 / seconds)
                }
                Some(_) => "restart".into(),
                None => "-".into(),
            }
        };
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        let pushed = match value("pushed_back") {
            0 => "-".to_string(),
            code => format!("STATUS {code}"),
        };
        let age = sample.age_s.map_or_else(|| "-".to_string(), |a| format!("{a:.1} s"));
        out.push_str(&format!(
            "{:<14} {:>10} {:>12} {:>10} {:>7} {:>19} {:>5} {:>4} {:>11} {:>7}\n",
            sample.module.name(),
            rate("events_acknowledged"),
            rate("events_committed"),
            format!("{:.1} s", value("commit_lag_ms") as f64 / 1000.0),
            value("unsent_records"),
            format!("{:.1} / {:.0}", mib(value("spool_used_bytes")), mib(value("spool_quota_bytes"))),
            value("connections_open"),
            if value("postgresql_connected") == 1 { "up" } else { "DOWN" },
            pushed,
            age
        ));
    }
    for sample in after {
        if let Some(error) = &sample.last_error {
            let errors: u64 =
                sample.values.iter().filter(|(k, _)| k.starts_with(DATABASE_ERRORS_PREFIX)).map(|(_, v)| *v).sum();
            out.push_str(&format!(
                "{}: last database error ({} resets, {errors} refusals since the lane started): {error}\n",
                sample.module.name(),
                sample.values.get("database_resets").copied().unwrap_or(0)
            ));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_known_integer_lines_of_a_report_are_kept() {
        // (line, kept)
        let cases = [
            ("events_committed = 12", true),
            ("commit_lag_ms = 0", true),
            ("events_committed = -1", false),
            ("events_committed = 1.5", false),
            ("pid = 1", false),
            ("identity = \"x\"", false),
            ("garbage", false),
            ("database_errors.42501 = 3", true),
            ("database_errors.other = 1", true),
            ("database_errors.4250 = 3", false),
            ("database_errors.x{y}z = 3", false),
            ("last_error = \"42501 permission denied\"", true),
            ("last_error = unquoted", false),
        ];
        for (line, kept) in cases {
            assert_eq!(!accepted_lines(line).is_empty(), kept, "{line}");
        }
    }

    #[test]
    fn status_shows_rates_from_two_reports_and_a_restart_as_such() {
        let sample = |committed: u64, lag_ms: u64| {
            let mut values = std::collections::BTreeMap::new();
            values.insert("events_committed".to_string(), committed);
            values.insert("events_acknowledged".to_string(), committed);
            values.insert("commit_lag_ms".to_string(), lag_ms);
            values.insert("postgresql_connected".to_string(), 1);
            LaneSample { module: Module::Dpi, values, age_s: Some(0.5), last_error: None }
        };
        let table = status_table(&[sample(1000, 0)], &[sample(3000, 2500)], 2.0);
        let line = table.lines().nth(1).unwrap();
        assert!(
            line.starts_with("dpi") && line.contains(" 1000 ") && line.contains("2.5 s") && line.contains(" up "),
            "{line}"
        );
        let restarted = status_table(&[sample(3000, 0)], &[sample(10, 0)], 1.0);
        assert!(restarted.contains("restart"), "{restarted}");
    }

    #[test]
    fn the_exposition_names_counters_total_and_milliseconds_seconds() {
        let mut values = std::collections::BTreeMap::new();
        values.insert("events_committed".to_string(), 7);
        values.insert("commit_lag_ms".to_string(), 1500);
        let text = render(&[LaneSample { module: Module::Dpi, values, age_s: Some(0.25), last_error: None }]);
        assert!(text.contains("# TYPE applianced_lane_events_committed counter\n"));
        assert!(text.contains("applianced_lane_events_committed_total{lane=\"dpi\"} 7\n"));
        assert!(text.contains("applianced_lane_commit_lag_seconds{lane=\"dpi\"} 1.500\n"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_hostile_report_stays_bounded_and_its_error_text_printable() {
        let mut report: String = (0..1000).map(|i| format!("database_errors.{i:05} = 1\n")).collect();
        report.push_str(&format!("last_error = \"{}\u{7}\"\n", "x".repeat(10_000)));
        let kept = accepted_lines(&report);
        let sqlstates = kept.lines().filter(|l| l.starts_with(DATABASE_ERRORS_PREFIX)).count();
        assert!(sqlstates <= crate::base::limits::LANE_SQLSTATES_MAX + 1, "{sqlstates}");
        let error = kept.lines().find_map(|l| l.strip_prefix("last_error = ")).unwrap();
        assert!(error.len() <= crate::base::limits::LANE_LAST_ERROR_BYTES_MAX + 2, "{}", error.len());
        assert!(error.trim_matches('"').chars().all(|c| c.is_ascii_graphic() || c == ' '));
    }

    #[test]
    fn database_errors_are_exposed_by_sqlstate_and_named_in_status() {
        let mut stats = crate::lane::core::LaneStats::default();
        for code in ["42501", "42501", "40001", "not a code"] {
            stats.count_database_error(code);
        }
        for i in 0..100 {
            stats.count_database_error(&format!("{i:05}"));
        }
        assert_eq!(stats.database_errors.get("42501"), Some(&2));
        assert!(stats.database_errors.len() <= crate::base::limits::LANE_SQLSTATES_MAX + 1);
        let mut values: std::collections::BTreeMap<String, u64> =
            stats.database_errors.iter().map(|(k, v)| (format!("{DATABASE_ERRORS_PREFIX}{k}"), *v)).collect();
        values.insert("database_resets".into(), 4);
        let sample = LaneSample {
            module: Module::Core,
            values,
            age_s: Some(1.0),
            last_error: Some("database refused a request: 42501 permission denied".into()),
        };
        let text = render(std::slice::from_ref(&sample));
        assert!(text.contains("applianced_lane_database_errors_total{lane=\"core\",sqlstate=\"42501\"} 2\n"), "{text}");
        let status = status_table(&[], &[sample], 1.0);
        assert!(status.contains("core: last database error (4 resets"), "{status}");
        assert!(status.contains("42501 permission denied"), "{status}");
    }
}
