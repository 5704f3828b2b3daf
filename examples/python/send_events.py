#!/usr/bin/env python3
"""send_events: a minimal RansomEye module in Python. Sends N events of one
table of its module, values chosen by column type, waits until every one is
acknowledged, prints acked/rejected and events/s, exits 1 if any event stays
unacknowledged.

    python3 send_events.py --module dpi --events 100000 --producer-id 9002 [--instance demo] [--server-uid UID] [--table flows]

Events go in batches, column by column (Stream.send_columns): one library
call per batch, so Python spends its time making the values, not crossing
into the library per value. Stream.send takes one event at a time instead.
"""

import argparse
import array
import os
import sys
import time

from ransomeye_producer import Event, ProducerError, Stream

DEFAULT_TABLES = {"core": "detections", "dpi": "flows", "linux_agent": "process_events", "windows_agent": "process_events"}
BATCH = 4096
# Byte i of the 16-byte values is byte (i % 8) of seq (little-endian) XOR i.
_XOR16 = int.from_bytes(bytes(range(16)), "little")


def sixteen_bytes(seqs):
    """Each seq's 16-byte value, back to back: every seq twice as a
    little-endian u64, XORed with bytes 0..15 (one big-int XOR per batch)."""
    doubled = array.array("Q", bytes(16 * len(seqs)))
    doubled[0::2] = doubled[1::2] = array.array("Q", seqs)
    if sys.byteorder == "big":
        doubled.byteswap()
    key = int.from_bytes(bytes(range(16)) * len(seqs), "little")
    return (int.from_bytes(doubled.tobytes(), "little") ^ key).to_bytes(16 * len(seqs), "little")


def column(sql_type, seqs, now_us):
    """The values of one column for the events `seqs` (a range), as a list
    or packed whole (Stream.send_columns takes both)."""
    if sql_type == "smallint":
        return [s % 3 for s in seqs]
    if sql_type == "integer":
        return [s & 0xFFFF for s in seqs]
    if sql_type == "bigint":
        return array.array("q", seqs)
    if sql_type == "real":
        return [(s % 100) / 100.0 for s in seqs]
    if sql_type == "text":
        return [b"example-%d" % s for s in seqs]
    if sql_type == "uuid":
        return sixteen_bytes(seqs)
    if sql_type == "bytea":
        packed = sixteen_bytes(seqs)
        return [packed[i : i + 16] for i in range(0, len(packed), 16)]
    if sql_type == "inet":  # 10.x.y.z from the seq's low 24 bits, 4 bytes per row in network order
        addresses = array.array("I", [0x0A000000 | (s & 0xFFFFFF) for s in seqs])
        if sys.byteorder == "little":
            addresses.byteswap()
        return addresses.tobytes()
    if sql_type == "timestamp with time zone":
        return array.array("q", [now_us]) * len(seqs)
    raise ValueError(f"no example values for {sql_type}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--module", required=True)
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--producer-id", type=int, required=True)
    p.add_argument("--instance", default="demo")
    p.add_argument(
        "--server-uid",
        type=int,
        default=os.geteuid(),
        help="the uid the appliance runs as (default: your own, for an appliance you started yourself)",
    )
    p.add_argument("--table")
    a = p.parse_args()
    table = a.table or DEFAULT_TABLES[a.module]
    now_us = int(time.time()) * 1_000_000
    source_id = b"RE" + bytes(14)
    started = time.monotonic()
    try:
        with Stream(a.instance, a.module, a.producer_id, 1, a.server_uid) as s:
            e = Event(a.module, table)
            first = s.next_seq
            end = first + a.events
            for batch_start in range(first, end, BATCH):
                seqs = range(batch_start, min(batch_start + BATCH, end))
                s.send_columns(e, [column(t, seqs, now_us) for t in e.columns], source_id, now_us)
                s.pump(0)
            s.flush(120_000)
            elapsed = time.monotonic() - started
            print(f"sent={a.events} acked={s.acked} rejected={s.rejected} events/s={a.events / elapsed:.0f}")
            return 0 if s.lost_reports == 0 else 1
    except ProducerError as err:
        print(f"error: {err} (status {err.status}, code {err.code})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
