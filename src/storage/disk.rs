//! The free-space reserve of the state filesystem (sans-I/O).
//!
//! Consumes the filesystem's size, the spool quota and the number of lanes;
//! produces the reserve (bytes that must stay free on the spool's
//! filesystem) and the embedded cluster's WAL sizes. The supervisor
//! computes it once at start and hands it to every lane (`lane
//! --disk-reserve`); a lane refuses to append a batch that would leave less
//! than the reserve free (STATUS `DiskReserve`), so that PostgreSQL, on the
//! same filesystem, never runs out of space because of the spool.
//!
//! What the reserve must hold, once every lane is pushed back:
//! - the WAL PostgreSQL may still add before a checkpoint lets it recycle
//!   segments: `max_wal_size` is a soft limit that heavy load overshoots,
//!   so `WAL_RESERVE_FACTOR` times it;
//! - what draining the spools adds to the event tables before the spool
//!   segments holding those events are deleted: per lane, the table bytes
//!   of one segment (a segment is deleted only once all of it is committed)
//!   plus, if the tables grow by more than the spool shrinks, that excess
//!   over the whole quota (`PG_TABLE_PERCENT_OF_SPOOL`, measured);
//! - PostgreSQL's log at its bound (`limits::pg_log_bytes_max`);
//! - `DISK_RESERVE_MARGIN_BYTES` for the rest (catalog rows of new
//!   partitions, visibility and free-space maps, temporary files).
//!
//! Invariant: the reserve is a pure function of its inputs, so the
//! supervisor, selftest and the docs compute the same figure.

use std::fmt;

use crate::base::limits::{
    DISK_RESERVE_MARGIN_BYTES, MAX_WAL_SIZE_BYTES_MAX, MAX_WAL_SIZE_BYTES_MIN, MAX_WAL_SIZE_SHARE_OF_FS,
    MIN_WAL_SIZE_BYTES_MAX, PG_TABLE_PERCENT_OF_SPOOL, SPOOL_SEGMENT_BYTES, WAL_RESERVE_FACTOR,
};

const MIB: u64 = 1024 * 1024;

/// `max_wal_size` of the embedded cluster on a filesystem of `fs_total`
/// bytes: a share of it, between the bounds, in whole MiB.
pub fn max_wal_size(fs_total: u64) -> u64 {
    (fs_total / MAX_WAL_SIZE_SHARE_OF_FS).clamp(MAX_WAL_SIZE_BYTES_MIN, MAX_WAL_SIZE_BYTES_MAX) / MIB * MIB
}

/// `min_wal_size` (WAL kept for recycling after a checkpoint): half the
/// maximum, at most `MIN_WAL_SIZE_BYTES_MAX`, in whole MiB.
pub fn min_wal_size(max_wal_size: u64) -> u64 {
    (max_wal_size / 2).min(MIN_WAL_SIZE_BYTES_MAX) / MIB * MIB
}

/// The parts of the reserve, each named so the log and selftest can show
/// where the figure comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskReserve {
    /// WAL growth allowance (0 when PostgreSQL is on another filesystem).
    pub wal: u64,
    /// Table growth while the spools drain (0 when PostgreSQL is elsewhere).
    pub drain: u64,
    /// PostgreSQL's log at its bound (0 when it is elsewhere).
    pub pg_log: u64,
    pub margin: u64,
}

impl DiskReserve {
    /// The reserve of a spool filesystem. `pg_shares_fs`: PostgreSQL's data
    /// directory is on the same filesystem as the spools.
    pub fn new(fs_total: u64, pg_shares_fs: bool, lanes: u64, spool_quota: u64, pg_log_bytes: u64) -> DiskReserve {
        if !pg_shares_fs {
            return DiskReserve { wal: 0, drain: 0, pg_log: 0, margin: DISK_RESERVE_MARGIN_BYTES };
        }
        let segment = SPOOL_SEGMENT_BYTES.min(spool_quota / 4).max(1);
        let percent = PG_TABLE_PERCENT_OF_SPOOL;
        let per_lane = segment * percent / 100 + spool_quota * percent.saturating_sub(100) / 100;
        DiskReserve {
            wal: WAL_RESERVE_FACTOR * max_wal_size(fs_total),
            drain: lanes * per_lane,
            pg_log: pg_log_bytes,
            margin: DISK_RESERVE_MARGIN_BYTES,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.wal + self.drain + self.pg_log + self.margin
    }

    /// Whether appending `wanted` bytes leaves at least the reserve free.
    pub fn admits(&self, available: u64, wanted: u64) -> bool {
        admits(self.bytes(), available, wanted)
    }
}

/// Whether appending `wanted` bytes to a filesystem with `available` bytes
/// free leaves at least `reserve` bytes free (what a lane checks: it is
/// given the reserve's total).
pub fn admits(reserve: u64, available: u64, wanted: u64) -> bool {
    available.checked_sub(wanted).is_some_and(|left| left >= reserve)
}

impl fmt::Display for DiskReserve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} MiB (WAL {} + spool drain {} + PostgreSQL log {} + margin {})",
            self.bytes() / MIB,
            self.wal / MIB,
            self.drain / MIB,
            self.pg_log / MIB,
            self.margin / MIB
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * MIB;

    #[test]
    fn wal_sizes_follow_the_filesystem_between_bounds() {
        // (filesystem, max_wal_size, min_wal_size)
        let cases = [
            (500 * MIB, 64 * MIB, 32 * MIB),
            (700 * MIB, 64 * MIB, 32 * MIB),
            (4 * GIB, 256 * MIB, 128 * MIB),
            (40 * GIB, 2560 * MIB, 1024 * MIB),
            (252 * GIB, 8 * GIB, 1024 * MIB),
            (4096 * GIB, 8 * GIB, 1024 * MIB),
        ];
        for (fs, max, min) in cases {
            assert_eq!(max_wal_size(fs), max, "{fs}");
            assert_eq!(min_wal_size(max_wal_size(fs)), min, "{fs}");
            // PostgreSQL needs at least two 16 MiB WAL segments of each.
            assert!(min_wal_size(max_wal_size(fs)) >= 32 * MIB);
        }
    }

    #[test]
    fn the_reserve_is_its_parts_and_admits_only_above_it() {
        let shared = DiskReserve::new(700 * MIB, true, 4, 32 * MIB, 17 * MIB);
        assert_eq!(shared.wal, 2 * 64 * MIB);
        // Segments are a quarter of a 32 MiB quota; tables measured at most
        // 110 % of the spool bytes: 8.8 MiB + 3.2 MiB per lane.
        assert_eq!(shared.drain, 4 * (8 * MIB * 110 / 100 + 32 * MIB * 10 / 100));
        assert_eq!(shared.bytes(), shared.wal + shared.drain + 17 * MIB + DISK_RESERVE_MARGIN_BYTES);
        let reserve = shared.bytes();
        // (available, wanted, admitted)
        let cases = [
            (reserve, 0, true),
            (reserve, 1, false),
            (reserve + MIB, MIB, true),
            (reserve + MIB, MIB + 1, false),
            (0, 0, false),
            (u64::MAX, u64::MAX, false),
            (10, 20, false),
        ];
        for (available, wanted, admitted) in cases {
            assert_eq!(shared.admits(available, wanted), admitted, "{available} {wanted}");
        }
        let apart = DiskReserve::new(700 * MIB, false, 4, 32 * MIB, 17 * MIB);
        assert_eq!(apart.bytes(), DISK_RESERVE_MARGIN_BYTES);
        assert!(apart.bytes() < shared.bytes());
    }
}
