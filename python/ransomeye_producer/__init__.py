"""RansomEye producer library for Python: send a module's events to its
applianced lane at native speed, through the C ABI of libransomeye_producer.

    from ransomeye_producer import Stream, Event
    with Stream("demo", "dpi", producer_id=7, epoch=1, server_uid=appliance_uid) as s:
        e = Event("dpi", "flows")
        for values in rows:
            s.send(e, values, source_id=b"\\x00" * 16, event_time_us=t)
        s.flush(30_000)          # every event durable in the appliance

For speed, give a batch column by column: s.send_columns(e, columns,
source_ids, event_times_us) is one library call per batch (see its doc).

Values are given per column, in column order (Event.columns lists the SQL
types): int for smallint/integer/bigint, float for real, str for text,
bytes for bytea, 16 bytes for uuid, ipaddress.IPv4Address/IPv6Address or
"a.b.c.d" for inet, int microseconds since 1970 for timestamptz, None for
NULL. The library is found through $RANSOMEYE_PRODUCER_LIB, then the system
library path (libransomeye_producer.so).
"""

import array
import ctypes
import ctypes.util
import ipaddress
import os
import socket
import struct

RP_OK = 0
RP_ERR_DISCONNECTED = -1
RP_ERR_REFUSED = -2
RP_ERR_EVENT = -3
RP_ERR_FULL = -4
RP_ERR_TIMEOUT = -5
RP_ERR_ARGUMENT = -6
RP_ERR_INTERNAL = -7

_ERROR_BYTES = 512


class ProducerError(Exception):
    """A call failed: `status` is the RP_ERR_* value, `code` the lane's
    ERROR or REJECT code (0 if none)."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code


def _load():
    path = os.environ.get("RANSOMEYE_PRODUCER_LIB") or ctypes.util.find_library("ransomeye_producer")
    if not path:
        raise OSError("libransomeye_producer not found: install libransomeye-producer or set RANSOMEYE_PRODUCER_LIB")
    lib = ctypes.CDLL(path)
    c = ctypes
    sigs = {
        "rp_stream_open": (c.c_void_p, [c.c_char_p, c.c_char_p, c.c_uint64, c.c_uint64, c.c_uint32, c.c_char_p, c.c_size_t]),
        "rp_stream_close": (None, [c.c_void_p]),
        "rp_event_new": (c.c_void_p, [c.c_char_p, c.c_char_p, c.c_char_p, c.c_size_t]),
        "rp_event_free": (None, [c.c_void_p]),
        "rp_event_column_count": (c.c_size_t, [c.c_void_p]),
        "rp_event_column_type": (c.c_char_p, [c.c_void_p, c.c_size_t]),
        "rp_event_null": (c.c_int, [c.c_void_p]),
        "rp_event_int": (c.c_int, [c.c_void_p, c.c_int64]),
        "rp_event_float": (c.c_int, [c.c_void_p, c.c_float]),
        "rp_event_text": (c.c_int, [c.c_void_p, c.c_char_p, c.c_size_t]),
        "rp_event_bytes": (c.c_int, [c.c_void_p, c.c_char_p, c.c_size_t]),
        "rp_event_uuid": (c.c_int, [c.c_void_p, c.c_char_p]),
        "rp_event_inet": (c.c_int, [c.c_void_p, c.c_char_p, c.c_size_t, c.c_uint8]),
        "rp_event_time": (c.c_int, [c.c_void_p, c.c_int64]),
        "rp_stream_send": (c.c_int64, [c.c_void_p, c.c_void_p, c.c_char_p, c.c_int64]),
        "rp_stream_send_record": (c.c_int64, [c.c_void_p, c.c_char_p, c.c_size_t]),
        "rp_stream_send_fields": (c.c_int64, [c.c_void_p, c.c_void_p, c.c_char_p, c.c_size_t, c.c_char_p, c.c_int64]),
        "rp_stream_send_columns": (
            c.c_int,
            [c.c_void_p, c.c_void_p, c.c_void_p, c.c_size_t, c.c_void_p, c.c_void_p, c.c_size_t, c.c_size_t,
             c.POINTER(c.c_size_t)],
        ),
        "rp_stream_pump": (c.c_int, [c.c_void_p, c.c_uint32]),
        "rp_stream_flush": (c.c_int, [c.c_void_p, c.c_uint32]),
        "rp_stream_fd": (c.c_int, [c.c_void_p]),
        "rp_stream_pending_bytes": (c.c_size_t, [c.c_void_p]),
        "rp_stream_acked": (c.c_uint64, [c.c_void_p]),
        "rp_stream_rejected": (c.c_uint64, [c.c_void_p]),
        "rp_stream_lost_reports": (c.c_uint64, [c.c_void_p]),
        "rp_stream_next_seq": (c.c_uint64, [c.c_void_p]),
        "rp_stream_last_error": (c.c_char_p, [c.c_void_p]),
        "rp_stream_last_code": (c.c_uint16, [c.c_void_p]),
    }
    for name, (restype, argtypes) in sigs.items():
        f = getattr(lib, name)
        f.restype = restype
        f.argtypes = argtypes
    return lib


_lib = None


def _library():
    global _lib
    if _lib is None:
        _lib = _load()
    return _lib


# Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
_PG_EPOCH_OFFSET_US = 946_684_800_000_000
_NULL = b"\xff\xff\xff\xff"
_LENGTH = struct.Struct(">i")


def _fixed(fmt, size):
    packer = struct.Struct(">i" + fmt).pack
    return lambda v: packer(size, v)


def _text(v):
    data = v.encode()
    return _LENGTH.pack(len(data)) + data


def _bytes(v):
    return _LENGTH.pack(len(v)) + bytes(v)


def _uuid(v):
    return b"\x00\x00\x00\x10" + bytes(v)


_INET4 = struct.Struct(">iBBBB").pack(8, 2, 32, 0, 4)
_INET6 = struct.Struct(">iBBBB").pack(20, 3, 128, 0, 16)


def _inet(v):
    """One host address: "a.b.c.d", an IPv6 string, or an ipaddress object
    (PostgreSQL's inet binary form: family, bits, is_cidr, length, address)."""
    if isinstance(v, str):
        try:
            return _INET4 + socket.inet_pton(socket.AF_INET, v)
        except OSError:
            return _INET6 + socket.inet_pton(socket.AF_INET6, v)
    packed = v.packed
    return (_INET4 if len(packed) == 4 else _INET6) + packed


def _time(v):
    return _TIME(8, v - _PG_EPOCH_OFFSET_US)


_TIME = struct.Struct(">iq").pack

# COPY BINARY field encoders per SQL type (PROTOCOL.md section 5).
_ENCODERS = {
    "smallint": _fixed("h", 2),
    "integer": _fixed("i", 4),
    "bigint": _fixed("q", 8),
    "real": _fixed("f", 4),
    "text": _text,
    "bytea": _bytes,
    "uuid": _uuid,
    "inet": _inet,
    "timestamp with time zone": _time,
}


class _Column(ctypes.Structure):
    """rp_column of the header: one column of a batch."""

    _fields_ = [
        ("kind", ctypes.c_uint32),
        ("values", ctypes.c_void_p),
        ("lengths", ctypes.c_void_p),
        ("nulls", ctypes.c_void_p),
    ]


# RP_COLUMN_* of the header, per SQL type.
_KINDS = {
    "smallint": 1,
    "integer": 1,
    "bigint": 1,
    "real": 2,
    "text": 3,
    "bytea": 4,
    "uuid": 5,
    "inet": 6,
    "timestamp with time zone": 7,
}
_FIXED = {1: ("q", 0), 2: ("f", 0.0), 7: ("q", 0)}


_EMPTY = b"\0"


def _address(v):
    """The address of the bytes `v` (None for None or empty); the caller
    keeps `v` alive until the library call returns."""
    return ctypes.cast(ctypes.c_char_p(v), ctypes.c_void_p).value if v else None


def _packed_inet(v):
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, str):
        return ipaddress.ip_address(v).packed
    return v.packed


def _encode(kind, values, rows):
    """A column's buffers, (values, lengths), when every value is already
    in the library's form (ints, floats, bytes); TypeError otherwise."""
    if kind in _FIXED:
        return array.array(_FIXED[kind][0], values), None
    data = b"".join(values)
    if kind == 5:
        if len(data) != 16 * rows:
            raise ValueError("a uuid is 16 bytes")
        return data, None
    return data, array.array("I", map(len, values))


def _converted(kind, v):
    """One value in the library's form (None: a NULL's placeholder)."""
    if v is None:
        return _FIXED[kind][1] if kind in _FIXED else (bytes(16) if kind == 5 else b"")
    if kind == 3 and isinstance(v, str):
        return v.encode()
    if kind == 6:
        return _packed_inet(v)
    return v


def _rows_of(columns, kinds, event_times_us):
    """How many rows a batch has: the length of its first column that is a
    sequence or an array (packed bytes do not say: 4 or 16 bytes per inet
    row), else of its event times."""
    for values, kind in zip(columns, kinds):
        if not (isinstance(values, (bytes, bytearray)) and kind in (5, 6)):
            return len(values)
    if not isinstance(event_times_us, int):
        return len(event_times_us)
    raise ProducerError(RP_ERR_ARGUMENT, 0, "every column is packed bytes: give rows=")


def _packed(kind, values, rows):
    """A column given already packed, (values, lengths), or None: an
    array.array of the kind's type ('q' int and timestamptz, 'f' real), or
    bytes with 16 bytes per row (uuid; inet IPv6) or 4 (inet IPv4)."""
    if isinstance(values, array.array) and kind in _FIXED and values.typecode == _FIXED[kind][0]:
        return values, None
    if isinstance(values, (bytes, bytearray)) and kind in (5, 6):
        width = len(values) // rows if rows else 0
        if rows == 0 or len(values) != width * rows or width not in ((16,) if kind == 5 else (4, 16)):
            raise ProducerError(RP_ERR_ARGUMENT, 0, f"a packed column of {len(values)} bytes for {rows} rows")
        return bytes(values), (None if kind == 5 else array.array("I", [width]) * rows)
    return None


def _column(kind, values, rows, keep):
    """The rp_column of one column's values (a sequence of `rows` values,
    None for NULL, or a packed column: see _packed); `keep` holds the
    buffers alive until the call returns. Values already in the library's
    form take one pass in C (array, join); the others (None, str text, inet
    strings or objects) are converted first."""
    nulls = None
    packed = _packed(kind, values, rows)
    if packed is None and len(values) != rows:
        raise ProducerError(RP_ERR_ARGUMENT, 0, f"a column has {len(values)} values, {rows} rows given")
    try:
        try:
            data, lengths = packed or _encode(kind, values, rows)
        except TypeError:
            if any(v is None for v in values):
                nulls = bytes(v is None for v in values)
            data, lengths = _encode(kind, [_converted(kind, v) for v in values], rows)
    except (TypeError, ValueError, OverflowError, AttributeError) as err:
        raise ProducerError(RP_ERR_EVENT, 0, f"a value does not fit its column: {err}") from err
    keep.extend((data, lengths, nulls))
    column = _Column(kind)
    column.values = data.buffer_info()[0] if isinstance(data, array.array) else _address(data) or _address(_EMPTY)
    column.lengths = lengths.buffer_info()[0] if lengths is not None and rows else None
    column.nulls = _address(nulls)
    return column


class Event:
    """A reusable event of one table: its values are given to Stream.send."""

    _handle = None  # until the library gave one (close and __del__ rely on it)

    def __init__(self, module, table):
        lib = _library()
        error = ctypes.create_string_buffer(_ERROR_BYTES)
        self._handle = lib.rp_event_new(module.encode(), table.encode(), error, _ERROR_BYTES)
        if not self._handle:
            raise ProducerError(RP_ERR_ARGUMENT, 0, error.value.decode(errors="replace"))
        count = lib.rp_event_column_count(self._handle)
        self.columns = [lib.rp_event_column_type(self._handle, i).decode() for i in range(count)]
        # One setter per column, chosen once (the per-event cost is the calls alone).
        setters = {
            "smallint": lib.rp_event_int,
            "integer": lib.rp_event_int,
            "bigint": lib.rp_event_int,
            "real": lib.rp_event_float,
            "timestamp with time zone": lib.rp_event_time,
        }
        self._setters = [setters.get(t) for t in self.columns]
        self._encoders = [_ENCODERS[t] for t in self.columns]
        self._kinds = [_KINDS[t] for t in self.columns]

    def encode(self, values):
        """The values as COPY BINARY fields (the lane checks them again)."""
        if len(values) != len(self._encoders):
            raise ProducerError(RP_ERR_EVENT, 0, f"{len(self._encoders)} values expected, {len(values)} given")
        try:
            return b"".join([_NULL if v is None else f(v) for f, v in zip(self._encoders, values)])
        except (struct.error, OSError, AttributeError, TypeError, ValueError) as err:
            raise ProducerError(RP_ERR_EVENT, 0, f"a value does not fit its column: {err}") from err

    def _put(self, values):
        lib, h = _lib, self._handle
        if len(values) != len(self.columns):
            raise ProducerError(RP_ERR_EVENT, 0, f"{len(self.columns)} values expected, {len(values)} given")
        for setter, sql_type, value in zip(self._setters, self.columns, values):
            if value is None:
                lib.rp_event_null(h)
            elif setter is not None:
                setter(h, value)
            elif sql_type == "text":
                data = value.encode()
                lib.rp_event_text(h, data, len(data))
            elif sql_type == "bytea":
                lib.rp_event_bytes(h, value, len(value))
            elif sql_type == "uuid":
                lib.rp_event_uuid(h, bytes(value))
            elif sql_type == "inet":
                address = ipaddress.ip_address(value)
                packed = address.packed
                lib.rp_event_inet(h, packed, len(packed), len(packed) * 8)
            else:
                raise ProducerError(RP_ERR_EVENT, 0, f"unsupported column type {sql_type}")

    def close(self):
        if self._handle:
            _lib.rp_event_free(self._handle)
            self._handle = None

    def __del__(self):
        self.close()


class Stream:
    """A producer's reliable stream to its lane (see the module docstring)."""

    _handle = None  # until the library gave one (close and __del__ rely on it)

    def __init__(self, instance, module, producer_id, epoch, server_uid):
        """`server_uid`: the uid the appliance runs as (the packaged
        appliance: the user ransomeye, pwd.getpwnam("ransomeye").pw_uid);
        a socket bound by any other uid gets no byte (PROTOCOL.md §1.3)."""
        lib = _library()
        error = ctypes.create_string_buffer(_ERROR_BYTES)
        self._handle = lib.rp_stream_open(
            instance.encode(), module.encode(), producer_id, epoch, server_uid, error, _ERROR_BYTES
        )
        if not self._handle:
            raise ProducerError(RP_ERR_DISCONNECTED, 0, error.value.decode(errors="replace"))

    def _check(self, status):
        if status < 0:
            lib = _lib
            raise ProducerError(
                status,
                lib.rp_stream_last_code(self._handle),
                lib.rp_stream_last_error(self._handle).decode(errors="replace"),
            )
        return status

    def send(self, event, values, source_id, event_time_us):
        """Queue one event (encoded here, checked by the library as the lane
        checks it); returns its seq. Waits for acknowledgements while 64 MiB
        of events are unacknowledged."""
        fields = event.encode(values)
        handle = self._handle
        return self._queue(
            lambda: _lib.rp_stream_send_fields(handle, event._handle, fields, len(fields), source_id, event_time_us)
        )

    def send_columns(self, event, columns, source_ids, event_times_us, rows=None):
        """Queue a batch of events given column by column, in one library
        call: `columns` has one sequence per column of the table (in
        Event.columns order), each with one value per row (types as for
        `send`; text also as UTF-8 bytes, inet also as 4 or 16 packed
        bytes), or packed whole: an array.array('q') for an integer or
        timestamptz column, array.array('f') for real, one bytes object of
        16 bytes per row for uuid, of 4 (IPv4) or 16 (IPv6) per row for
        inet (`rows` says how many rows when no column or event-time list
        does). `source_ids`: one 16-byte id for every row, or 16 bytes per
        row back to back; `event_times_us`: one int for every row, or a
        sequence. Every row is checked as the lane checks it; a bad row
        raises ProducerError naming it, the rows before it stay queued.
        Returns the number of rows queued."""
        if len(columns) != len(event.columns):
            raise ProducerError(RP_ERR_ARGUMENT, 0, f"{len(event.columns)} columns expected, {len(columns)} given")
        if rows is None:
            rows = _rows_of(columns, event._kinds, event_times_us)
        keep = []
        batch = (_Column * len(columns))(
            *[_column(kind, values, rows, keep) for kind, values in zip(event._kinds, columns)]
        )
        if len(source_ids) == 16:
            source_ids = bytes(source_ids) * rows
        if len(source_ids) != 16 * rows:
            raise ProducerError(RP_ERR_ARGUMENT, 0, "source_ids: 16 bytes, or 16 bytes per row")
        times = array.array("q", [event_times_us]) * rows if isinstance(event_times_us, int) else array.array("q", event_times_us)
        if len(times) != rows:
            raise ProducerError(RP_ERR_ARGUMENT, 0, f"{len(times)} event times for {rows} rows")
        if rows == 0:
            return 0
        ids = bytes(source_ids)
        next_row = ctypes.c_size_t(0)
        while True:
            status = _lib.rp_stream_send_columns(
                self._handle, event._handle, batch, len(columns), ids, times.buffer_info()[0], rows,
                next_row.value, ctypes.byref(next_row),
            )
            if status != RP_ERR_FULL:
                self._check(status)
                return rows
            self._check(_lib.rp_stream_pump(self._handle, 10))

    def send_values(self, event, values, source_id, event_time_us):
        """The same, one library call per value (rp_event_<type>)."""

        def send():
            event._put(values)
            return _lib.rp_stream_send(self._handle, event._handle, source_id, event_time_us)

        return self._queue(send)

    def _queue(self, send):
        """Call `send` until the event is queued: while 64 MiB wait for
        acknowledgement (RP_ERR_FULL), take replies in first."""
        while True:
            seq = send()
            if seq != RP_ERR_FULL:
                return self._check(seq)
            self._check(_lib.rp_stream_pump(self._handle, 10))

    def send_record(self, record):
        """Queue one pre-encoded EVENTS record (PROTOCOL.md section 5)."""
        return self._check(_lib.rp_stream_send_record(self._handle, record, len(record)))

    def pump(self, wait_ms=0):
        self._check(_lib.rp_stream_pump(self._handle, wait_ms))

    def flush(self, timeout_ms=30_000):
        self._check(_lib.rp_stream_flush(self._handle, timeout_ms))

    def fileno(self):
        """The connection's descriptor, for select/poll: readable means
        replies; while pending_bytes is not 0, writable means room."""
        return _lib.rp_stream_fd(self._handle)

    @property
    def pending_bytes(self):
        """Bytes of frames waiting for room in the socket."""
        return _lib.rp_stream_pending_bytes(self._handle)

    @property
    def next_seq(self):
        return _lib.rp_stream_next_seq(self._handle)

    @property
    def acked(self):
        return _lib.rp_stream_acked(self._handle)

    @property
    def rejected(self):
        return _lib.rp_stream_rejected(self._handle)

    @property
    def lost_reports(self):
        return _lib.rp_stream_lost_reports(self._handle)

    def close(self):
        if self._handle:
            _lib.rp_stream_close(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()
