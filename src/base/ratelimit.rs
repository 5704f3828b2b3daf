//! Rate-limited log lines: at most a number of lines per window of time
//! for one kind of line; the rest are counted and the count reported with
//! the next line of that kind that is logged. Sans-I/O ([`RateLimitedLog`],
//! given the time) with a process-wide table per call site for code that
//! keeps no state of its own ([`allow`]).

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use crate::base::limits::{REJECT_LOG_PER_S, REPEATED_LOG_INTERVAL_MS};

/// At most `lines_max` log lines per `window_ms` (by default
/// [`REJECT_LOG_PER_S`] per second); the rest are counted and reported with
/// the next line that is logged.
#[derive(Debug)]
pub struct RateLimitedLog {
    window_ms: u64,
    lines_max: u32,
    window_start_ms: Option<u64>,
    logged_in_window: u32,
    suppressed: u64,
}

impl Default for RateLimitedLog {
    fn default() -> RateLimitedLog {
        RateLimitedLog::new(1000, REJECT_LOG_PER_S)
    }
}

impl RateLimitedLog {
    pub const fn new(window_ms: u64, lines_max: u32) -> RateLimitedLog {
        RateLimitedLog { window_ms, lines_max, window_start_ms: None, logged_in_window: 0, suppressed: 0 }
    }

    /// Whether to log now; returns the number suppressed since the last line.
    pub fn allow(&mut self, now_ms: u64) -> Option<u64> {
        if self.window_start_ms.is_none_or(|start| now_ms.saturating_sub(start) >= self.window_ms) {
            self.window_start_ms = Some(now_ms);
            self.logged_in_window = 0;
        }
        if self.logged_in_window >= self.lines_max {
            self.suppressed += 1;
            return None;
        }
        self.logged_in_window += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Whether a line of kind `site` (one per call site: the table is bounded
/// by the program's text) may be logged now, one per
/// `REPEATED_LOG_INTERVAL_MS`; returns the number suppressed since the last.
/// For lines that can repeat every turn of a loop (a write that keeps
/// failing, a peer that keeps sending what is ignored).
pub fn allow(site: &'static str) -> Option<u64> {
    static START: OnceLock<Instant> = OnceLock::new();
    static SITES: Mutex<BTreeMap<&'static str, RateLimitedLog>> = Mutex::new(BTreeMap::new());
    let now_ms = START.get_or_init(Instant::now).elapsed().as_millis() as u64;
    let mut sites = SITES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    sites.entry(site).or_insert_with(|| RateLimitedLog::new(REPEATED_LOG_INTERVAL_MS, 1)).allow(now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_logs_are_rate_limited() {
        let mut log = RateLimitedLog::default();
        let allowed = (0..100).filter(|_| log.allow(5000).is_some()).count();
        assert_eq!(allowed as u32, REJECT_LOG_PER_S);
        assert_eq!(log.allow(6000), Some(100 - u64::from(REJECT_LOG_PER_S)));
    }

    #[test]
    fn a_repeated_line_is_logged_once_per_window_with_the_count_it_stood_for() {
        let mut log = RateLimitedLog::new(60_000, 1);
        // (now, allowed with this count)
        let cases = [(0, Some(0)), (500, None), (59_999, None), (60_000, Some(2)), (60_001, None), (200_000, Some(1))];
        for (now, expected) in cases {
            assert_eq!(log.allow(now), expected, "at {now} ms");
        }
        assert!(allow("ratelimit test site").is_some());
        assert!(allow("ratelimit test site").is_none());
    }
}
