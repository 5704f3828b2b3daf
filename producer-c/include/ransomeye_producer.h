/*
 * ransomeye_producer.h: the C ABI of the RansomEye producer library.
 *
 * A module sends its events to its lane of an applianced appliance:
 *
 *   char err[256];
 *   rp_stream *s = rp_stream_open("demo", "dpi", 7, 1, appliance_uid, err, sizeof err);
 *   rp_event *e = rp_event_new("dpi", "flows", err, sizeof err);
 *   ... one rp_event_<type>() per column, in column order ...
 *   int64_t seq = rp_stream_send(s, e, source_id, event_time_us);
 *   rp_stream_flush(s, 30000);      // every event durable in the appliance
 *   rp_event_free(e); rp_stream_close(s);
 *
 * Functions returning int return RP_OK (0) or a negative RP_ERR_*; after an
 * error rp_stream_last_error() names the cause. Strings are NUL-terminated
 * UTF-8 unless a length is given. A stream or event is used by one thread
 * at a time. The protocol is hardening/PROTOCOL.md of applianced.
 */
#ifndef RANSOMEYE_PRODUCER_H
#define RANSOMEYE_PRODUCER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RP_OK 0
/* The lane is not reachable now; events are kept and resent (retry pump/flush). */
#define RP_ERR_DISCONNECTED (-1)
/* The lane refused this producer for good; rp_stream_last_code() is its ERROR code. */
#define RP_ERR_REFUSED (-2)
/* The event is invalid and was not queued; rp_stream_last_code() is its REJECT code, or 0. */
#define RP_ERR_EVENT (-3)
/* Too many events wait for acknowledgement (64 MiB): pump or flush first. */
#define RP_ERR_FULL (-4)
/* rp_stream_flush() ran out of time. */
#define RP_ERR_TIMEOUT (-5)
/* A NULL pointer, a bad string, an unknown module or table. */
#define RP_ERR_ARGUMENT (-6)
/* A bug in the library. */
#define RP_ERR_INTERNAL (-7)

typedef struct RpStream rp_stream;
typedef struct RpEvent rp_event;

/* Open a stream to the lane of `module` ("core", "dpi", "linux_agent",
 * "windows_agent") of appliance `instance` ("demo" for the embedded
 * default), as producer `producer_id` in `epoch`, refusing a socket not
 * owned by `server_uid` (the uid the appliance runs as). Resumes after the
 * lane's acknowledged position. NULL on failure, the reason in `error`. */
rp_stream *rp_stream_open(const char *instance, const char *module, uint64_t producer_id, uint64_t epoch,
                          uint32_t server_uid, char *error, size_t error_len);
/* Close (events not yet acknowledged are dropped: flush first). */
void rp_stream_close(rp_stream *stream);

/* Start an event of `module`'s table `table` (e.g. "dpi", "flows"). */
rp_event *rp_event_new(const char *module, const char *table, char *error, size_t error_len);
void rp_event_free(rp_event *event);
/* Values an event of this table takes, and each column's SQL type
 * ("smallint", "integer", "bigint", "real", "text", "bytea", "uuid",
 * "inet", "timestamp with time zone"; a static string, NULL past the end). */
size_t rp_event_column_count(const rp_event *event);
const char *rp_event_column_type(const rp_event *event, size_t index);

/* The next column's value. A wrong value is reported by rp_stream_send. */
int rp_event_null(rp_event *event);
int rp_event_int(rp_event *event, int64_t value);   /* smallint, integer, bigint */
int rp_event_float(rp_event *event, float value);   /* real */
int rp_event_text(rp_event *event, const char *text, size_t len);
int rp_event_bytes(rp_event *event, const uint8_t *bytes, size_t len);
int rp_event_uuid(rp_event *event, const uint8_t *uuid16);
/* An IPv4 (len 4) or IPv6 (len 16) address in network order, and its prefix length. */
int rp_event_inet(rp_event *event, const uint8_t *address, size_t len, uint8_t bits);
/* Microseconds since 1970-01-01 UTC. */
int rp_event_time(rp_event *event, int64_t unix_us);

/* Queue the event (checked as the lane checks it) with its 16-byte source
 * id and event time; returns its seq (> 0) or a negative RP_ERR_*. The
 * event is emptied either way, ready for the next values. */
int64_t rp_stream_send(rp_stream *stream, rp_event *event, const uint8_t *source_id16, int64_t event_time_us);
/* Queue an event of `event`'s table given as its fields already encoded
 * (COPY BINARY field encoding of every column, PROTOCOL.md section 5: per
 * field a big-endian int32 length, -1 for NULL, then PostgreSQL's binary
 * form), checked as the lane checks it; returns its seq or RP_ERR_*.
 * Values pushed into `event` so far are dropped. */
int64_t rp_stream_send_fields(rp_stream *stream, rp_event *event, const uint8_t *fields, size_t len,
                              const uint8_t *source_id16, int64_t event_time_us);
/* Queue one pre-encoded EVENTS record (PROTOCOL.md section 5). */
int64_t rp_stream_send_record(rp_stream *stream, const uint8_t *record, size_t len);

/* Send what the credit allows and take in replies, waiting up to wait_ms
 * (0: only what is there). For event loops: call when rp_stream_fd() is
 * readable, or on a timer. */
int rp_stream_pump(rp_stream *stream, uint32_t wait_ms);
/* Wait until every queued event is acknowledged, for at most timeout_ms. */
int rp_stream_flush(rp_stream *stream, uint32_t timeout_ms);
/* The connection's descriptor, -1 while disconnected. */
int rp_stream_fd(const rp_stream *stream);

uint64_t rp_stream_acked(const rp_stream *stream);
uint64_t rp_stream_rejected(const rp_stream *stream);
uint64_t rp_stream_lost_reports(const rp_stream *stream);
uint64_t rp_stream_next_seq(const rp_stream *stream);
/* The last error's text ("" if none); valid until the next call on the stream. */
const char *rp_stream_last_error(const rp_stream *stream);
/* The lane's ERROR or REJECT code of the last error, 0 if none. */
uint16_t rp_stream_last_code(const rp_stream *stream);

#ifdef __cplusplus
}
#endif

#endif /* RANSOMEYE_PRODUCER_H */
