#!/usr/bin/env python3
"""send_events: a minimal RansomEye module in Python. Sends N events of one
table of its module, values chosen by column type, waits until every one is
acknowledged, prints acked/rejected and events/s, exits 1 if any event stays
unacknowledged.

    python3 send_events.py --module dpi --events 100000 --producer-id 9002 [--instance demo] [--server-uid UID] [--table flows]
"""

import argparse
import os
import sys
import time

from ransomeye_producer import Event, ProducerError, Stream

DEFAULT_TABLES = {"core": "detections", "dpi": "flows", "linux_agent": "process_events", "windows_agent": "process_events"}


def value(sql_type, seq, now_us):
    if sql_type == "smallint":
        return seq % 3
    if sql_type == "integer":
        return seq % 65536
    if sql_type == "bigint":
        return seq
    if sql_type == "real":
        return (seq % 100) / 100.0
    if sql_type == "text":
        return f"example-{seq}"
    if sql_type in ("bytea", "uuid"):
        return bytes(x ^ b for b, x in enumerate(seq.to_bytes(8, "little") * 2))
    if sql_type == "inet":
        return f"10.{(seq >> 16) & 255}.{(seq >> 8) & 255}.{seq & 255}"
    if sql_type == "timestamp with time zone":
        return now_us
    return None


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
            for seq in range(first, first + a.events):
                s.send(e, [value(t, seq, now_us) for t in e.columns], source_id, now_us)
                if seq & 1023 == 0:
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
