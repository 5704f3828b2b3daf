#!/usr/bin/env python3
"""Writes the seed inputs of the frame_decoder fuzz target.

Valid protocol v1 streams (src/frame.rs) so the fuzzer starts from
inputs that pass the header, CRC32C and EVENTS checks and reach
validate_record. Re-run after a protocol or schema change:

    python3 fuzz/seeds/make_seeds.py
"""

import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "frame_decoder")

HELLO, WELCOME, EVENTS, ACK, CREDIT, REJECT, ERROR = range(1, 8)


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def frame(kind, body):
    return struct.pack(">HBBHHII", 0x5245, 1, kind, 0, 0, len(body), crc32c(body)) + body


def field(value):
    """One COPY BINARY field: i32 length (-1 is NULL) and the bytes."""
    if value is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(value)) + value


def record(table, fields, time_us=1_700_000_000_000_000, source=b"\x11" * 16):
    payload = b"".join(field(f) for f in fields)
    head = struct.pack(">IBBH16sq", 28 + len(payload), table, 0, len(fields), source, time_us)
    return head + payload


def events(first_seq, records):
    return struct.pack(">QII", first_seq, len(records), 0) + b"".join(records)


def i2(v):
    return struct.pack(">h", v)


def i4(v):
    return struct.pack(">i", v)


def i8(v):
    return struct.pack(">q", v)


def inet4(a, b, c, d):
    return bytes([2, 32, 0, 4, a, b, c, d])


def inet6():
    return bytes([3, 128, 0, 16]) + bytes(range(16))


def hello(module):
    return frame(HELLO, struct.pack(">B7sQQ", module, b"\0" * 7, 42, 7))


# linux_agent tables in src/schema.rs order: process_events, file_events, network_events.
linux_process = record(0, [i2(1), i4(100), i4(1), i4(0), i4(0), b"/usr/bin/ls", b"ls -l /tmp", None])
linux_file = record(1, [i2(2), i4(100), i4(0), b"/tmp/a", None, i8(4096), struct.pack(">f", 7.5)])
linux_network = record(
    2, [i2(1), i4(100), i4(0), i2(6), inet4(10, 0, 0, 1), i4(5555), inet6(), i4(443), i8(10), i8(20)]
)
bad_text = record(0, [i2(1), i4(1), i4(1), i4(0), i4(0), b"\xff\xfe", b"a\0b", None])
bad_time = record(1, [i2(2), i4(1), i4(0), b"/x", b"/y", i8(0), None], time_us=-1)

seeds = {
    "hello": hello(3),
    "linux_session": hello(3)
    + frame(EVENTS, events(1, [linux_process, linux_file, linux_network]))
    + frame(EVENTS, events(4, [bad_text, bad_time])),
    "server_frames": frame(WELCOME, struct.pack(">QQII", 1, 3, 4 << 20, 0))
    + frame(ACK, struct.pack(">QQ", 1, 3))
    + frame(CREDIT, struct.pack(">II", 65536, 0)),
    "reject_error": frame(REJECT, struct.pack(">QQHHI", 1, 4, 4, 9, 0) + b"not utf-8")
    + frame(ERROR, struct.pack(">HHI", 14, 11, 0) + b"field count"),
    "partial": hello(1) + frame(EVENTS, events(9, [linux_process]))[:40],
}

os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
