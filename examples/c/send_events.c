/*
 * send_events: a minimal RansomEye module in C. Sends N events of one table
 * of its module to the lane, values chosen by column type, waits until every
 * one is acknowledged, prints acked/rejected and exits 1 if any event stays
 * unacknowledged.
 *
 *   cc -o send_events send_events.c $(pkg-config --cflags --libs ransomeye-producer)
 *   ./send_events --module dpi --events 100000 --producer-id 9001 [--instance demo] [--server-uid UID] [--table flows]
 *
 * --server-uid: the uid the appliance runs as (the packaged appliance: the
 * user ransomeye); the default, your own uid, fits an appliance you started
 * yourself.
 */
#include <ransomeye_producer.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *default_table(const char *module) {
    if (strcmp(module, "core") == 0) return "detections";
    if (strcmp(module, "dpi") == 0) return "flows";
    if (strcmp(module, "linux_agent") == 0) return "process_events";
    if (strcmp(module, "windows_agent") == 0) return "process_events";
    return NULL;
}

/* One value for column `i` of event `seq`, by the column's type. */
static void put_value(rp_event *e, size_t i, uint64_t seq) {
    const char *type = rp_event_column_type(e, i);
    char text[64];
    uint8_t bytes[16];
    if (strcmp(type, "smallint") == 0) {
        rp_event_int(e, (int64_t)(seq % 3));
    } else if (strcmp(type, "integer") == 0) {
        rp_event_int(e, (int64_t)(seq % 65536));
    } else if (strcmp(type, "bigint") == 0) {
        rp_event_int(e, (int64_t)seq);
    } else if (strcmp(type, "real") == 0) {
        rp_event_float(e, (float)(seq % 100) / 100.0f);
    } else if (strcmp(type, "text") == 0) {
        int n = snprintf(text, sizeof text, "example-%llu", (unsigned long long)seq);
        rp_event_text(e, text, (size_t)n);
    } else if (strcmp(type, "bytea") == 0 || strcmp(type, "uuid") == 0) {
        for (size_t b = 0; b < 16; b++) bytes[b] = (uint8_t)(seq >> ((b % 8) * 8)) ^ (uint8_t)b;
        if (strcmp(type, "uuid") == 0) rp_event_uuid(e, bytes); else rp_event_bytes(e, bytes, 16);
    } else if (strcmp(type, "inet") == 0) {
        uint8_t address[4] = {10, (uint8_t)(seq >> 16), (uint8_t)(seq >> 8), (uint8_t)seq};
        rp_event_inet(e, address, 4, 32);
    } else if (strcmp(type, "timestamp with time zone") == 0) {
        rp_event_time(e, (int64_t)time(NULL) * 1000000);
    } else {
        rp_event_null(e);
    }
}

int main(int argc, char **argv) {
    const char *module = NULL, *instance = "demo", *table = NULL;
    uint64_t events = 0, producer_id = 0;
    uint32_t server_uid = (uint32_t)geteuid();
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--module") == 0) module = argv[i + 1];
        else if (strcmp(argv[i], "--events") == 0) events = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--producer-id") == 0) producer_id = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--instance") == 0) instance = argv[i + 1];
        else if (strcmp(argv[i], "--server-uid") == 0) server_uid = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--table") == 0) table = argv[i + 1];
        else { fprintf(stderr, "unknown argument %s\n", argv[i]); return 2; }
    }
    if (module == NULL || (table == NULL && (table = default_table(module)) == NULL)) {
        fprintf(stderr, "usage: send_events --module M --events N --producer-id ID [--instance NAME] [--server-uid UID] [--table T]\n");
        return 2;
    }
    char error[256];
    rp_stream *s = rp_stream_open(instance, module, producer_id, 1, server_uid, error, sizeof error);
    if (s == NULL) { fprintf(stderr, "open: %s\n", error); return 1; }
    rp_event *e = rp_event_new(module, table, error, sizeof error);
    if (e == NULL) { fprintf(stderr, "event: %s\n", error); return 2; }
    size_t columns = rp_event_column_count(e);
    uint64_t first = rp_stream_next_seq(s);
    uint8_t source_id[16] = {0x52, 0x45};
    int64_t now_us = (int64_t)time(NULL) * 1000000;
    for (uint64_t seq = first; seq < first + events; seq++) {
        for (size_t i = 0; i < columns; i++) put_value(e, i, seq);
        int64_t sent;
        while ((sent = rp_stream_send(s, e, source_id, now_us)) == RP_ERR_FULL) {
            for (size_t i = 0; i < columns; i++) put_value(e, i, seq);
            rp_stream_pump(s, 10);
        }
        if (sent < 0) { fprintf(stderr, "send: %s\n", rp_stream_last_error(s)); return 1; }
        if ((seq & 1023) == 0) rp_stream_pump(s, 0);
    }
    int flushed = rp_stream_flush(s, 120000);
    uint64_t acked = rp_stream_acked(s), rejected = rp_stream_rejected(s);
    printf("sent=%llu acked=%llu rejected=%llu\n", (unsigned long long)events, (unsigned long long)acked,
           (unsigned long long)rejected);
    if (flushed != RP_OK) fprintf(stderr, "flush: %s\n", rp_stream_last_error(s));
    int status = (flushed == RP_OK && rp_stream_lost_reports(s) == 0) ? 0 : 1;
    rp_event_free(e);
    rp_stream_close(s);
    return status;
}
