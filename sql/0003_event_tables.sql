-- Event tables, rendered from src/model/schema.rs by `applianced generate-sql`; do not edit by hand.
-- Every table is LOGGED, append-only by privilege, range-partitioned by the appliance-assigned
-- ingest_time (one partition per UTC day) and hash-subpartitioned by producer_id.
-- Partitions are created by appliance.ensure_partitions(); there is no DEFAULT partition.

SET LOCAL ROLE ransomeye_owner;

-- core: Core Engine
CREATE TABLE core.detections (
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint NOT NULL,
    source_id uuid NOT NULL,
    event_time timestamptz NOT NULL,
    ingest_time timestamptz NOT NULL,
    detection_id uuid NOT NULL,
    rule_id text NOT NULL,
    severity smallint NOT NULL,
    score real NOT NULL,
    subject_source_id uuid NOT NULL,
    summary text NOT NULL,
    evidence text
) PARTITION BY RANGE (ingest_time);
CREATE INDEX detections_ingest_time_brin ON core.detections USING brin (ingest_time) WITH (pages_per_range = 32, autosummarize = on);
CREATE INDEX detections_event_time_brin ON core.detections USING brin (event_time) WITH (pages_per_range = 32, autosummarize = on);
INSERT INTO appliance.event_tables (schema_name, table_name) VALUES ('core', 'detections');

CREATE TABLE core.incident_transitions (
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint NOT NULL,
    source_id uuid NOT NULL,
    event_time timestamptz NOT NULL,
    ingest_time timestamptz NOT NULL,
    incident_id uuid NOT NULL,
    from_state smallint NOT NULL,
    to_state smallint NOT NULL,
    actor text NOT NULL,
    reason text
) PARTITION BY RANGE (ingest_time);
CREATE INDEX incident_transitions_ingest_time_brin ON core.incident_transitions USING brin (ingest_time) WITH (pages_per_range = 32, autosummarize = on);
CREATE INDEX incident_transitions_event_time_brin ON core.incident_transitions USING brin (event_time) WITH (pages_per_range = 32, autosummarize = on);
-- B-tree for the named query: incident timeline: all transitions of one incident in ingest order (core_api.core_incident_transitions WHERE incident_id = $1 ORDER BY ingest_time)
CREATE INDEX incident_transitions_incident_id_ingest_time_btree ON core.incident_transitions USING btree (incident_id, ingest_time);
INSERT INTO appliance.event_tables (schema_name, table_name) VALUES ('core', 'incident_transitions');

CREATE TABLE core.response_actions (
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint NOT NULL,
    source_id uuid NOT NULL,
    event_time timestamptz NOT NULL,
    ingest_time timestamptz NOT NULL,
    action_id uuid NOT NULL,
    incident_id uuid,
    action_kind smallint NOT NULL,
    target text NOT NULL,
    requested_by text NOT NULL,
    outcome smallint NOT NULL,
    detail text
) PARTITION BY RANGE (ingest_time);
CREATE INDEX response_actions_ingest_time_brin ON core.response_actions USING brin (ingest_time) WITH (pages_per_range = 32, autosummarize = on);
CREATE INDEX response_actions_event_time_brin ON core.response_actions USING brin (event_time) WITH (pages_per_range = 32, autosummarize = on);
INSERT INTO appliance.event_tables (schema_name, table_name) VALUES ('core', 'response_actions');

CREATE TABLE core.quarantine (
    received_at timestamptz NOT NULL,
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint,
    table_name text NOT NULL,
    reason_code smallint NOT NULL,
    reason text NOT NULL,
    payload bytea
) WITH (fillfactor = 100);
CREATE INDEX quarantine_received_at_brin ON core.quarantine USING brin (received_at) WITH (autosummarize = on);

-- dpi: DPI probe
CREATE TABLE dpi.flows (
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint NOT NULL,
    source_id uuid NOT NULL,
    event_time timestamptz NOT NULL,
    ingest_time timestamptz NOT NULL,
    flow_id uuid NOT NULL,
    protocol smallint NOT NULL,
    src_addr inet NOT NULL,
    src_port integer NOT NULL,
    dst_addr inet NOT NULL,
    dst_port integer NOT NULL,
    packets bigint NOT NULL,
    bytes bigint NOT NULL,
    duration_ms bigint NOT NULL,
    app_protocol text
) PARTITION BY RANGE (ingest_time);
CREATE INDEX flows_ingest_time_brin ON dpi.flows USING brin (ingest_time) WITH (pages_per_range = 32, autosummarize = on);
CREATE INDEX flows_event_time_brin ON dpi.flows USING brin (event_time) WITH (pages_per_range = 32, autosummarize = on);
INSERT INTO appliance.event_tables (schema_name, table_name) VALUES ('dpi', 'flows');

CREATE TABLE dpi.dns (
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint NOT NULL,
    source_id uuid NOT NULL,
    event_time timestamptz NOT NULL,
    ingest_time timestamptz NOT NULL,
    flow_id uuid NOT NULL,
    query_name text NOT NULL,
    query_type integer NOT NULL,
    response_code smallint NOT NULL,
    answers text
) PARTITION BY RANGE (ingest_time);
CREATE INDEX dns_ingest_time_brin ON dpi.dns USING brin (ingest_time) WITH (pages_per_range = 32, autosummarize = on);
CREATE INDEX dns_event_time_brin ON dpi.dns USING brin (event_time) WITH (pages_per_range = 32, autosummarize = on);
INSERT INTO appliance.event_tables (schema_name, table_name) VALUES ('dpi', 'dns');

CREATE TABLE dpi.tls (
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint NOT NULL,
    source_id uuid NOT NULL,
    event_time timestamptz NOT NULL,
    ingest_time timestamptz NOT NULL,
    flow_id uuid NOT NULL,
    sni text,
    version integer NOT NULL,
    cipher_suite integer NOT NULL,
    ja3 bytea,
    cert_sha256 bytea
) PARTITION BY RANGE (ingest_time);
CREATE INDEX tls_ingest_time_brin ON dpi.tls USING brin (ingest_time) WITH (pages_per_range = 32, autosummarize = on);
CREATE INDEX tls_event_time_brin ON dpi.tls USING brin (event_time) WITH (pages_per_range = 32, autosummarize = on);
INSERT INTO appliance.event_tables (schema_name, table_name) VALUES ('dpi', 'tls');

CREATE TABLE dpi.smb (
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint NOT NULL,
    source_id uuid NOT NULL,
    event_time timestamptz NOT NULL,
    ingest_time timestamptz NOT NULL,
    flow_id uuid NOT NULL,
    command integer NOT NULL,
    dialect integer NOT NULL,
    share text,
    path text,
    status bigint NOT NULL,
    bytes bigint NOT NULL
) PARTITION BY RANGE (ingest_time);
CREATE INDEX smb_ingest_time_brin ON dpi.smb USING brin (ingest_time) WITH (pages_per_range = 32, autosummarize = on);
CREATE INDEX smb_event_time_brin ON dpi.smb USING brin (event_time) WITH (pages_per_range = 32, autosummarize = on);
INSERT INTO appliance.event_tables (schema_name, table_name) VALUES ('dpi', 'smb');

CREATE TABLE dpi.http (
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint NOT NULL,
    source_id uuid NOT NULL,
    event_time timestamptz NOT NULL,
    ingest_time timestamptz NOT NULL,
    flow_id uuid NOT NULL,
    method text NOT NULL,
    host text NOT NULL,
    uri text NOT NULL,
    status_code smallint NOT NULL,
    user_agent text,
    content_type text,
    bytes bigint NOT NULL
) PARTITION BY RANGE (ingest_time);
CREATE INDEX http_ingest_time_brin ON dpi.http USING brin (ingest_time) WITH (pages_per_range = 32, autosummarize = on);
CREATE INDEX http_event_time_brin ON dpi.http USING brin (event_time) WITH (pages_per_range = 32, autosummarize = on);
INSERT INTO appliance.event_tables (schema_name, table_name) VALUES ('dpi', 'http');

CREATE TABLE dpi.quarantine (
    received_at timestamptz NOT NULL,
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint,
    table_name text NOT NULL,
    reason_code smallint NOT NULL,
    reason text NOT NULL,
    payload bytea
) WITH (fillfactor = 100);
CREATE INDEX quarantine_received_at_brin ON dpi.quarantine USING brin (received_at) WITH (autosummarize = on);

-- linux_agent: Linux agent
CREATE TABLE linux_agent.process_events (
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint NOT NULL,
    source_id uuid NOT NULL,
    event_time timestamptz NOT NULL,
    ingest_time timestamptz NOT NULL,
    action smallint NOT NULL,
    pid integer NOT NULL,
    ppid integer NOT NULL,
    uid integer NOT NULL,
    gid integer NOT NULL,
    exe text NOT NULL,
    cmdline text NOT NULL,
    sha256 bytea
) PARTITION BY RANGE (ingest_time);
CREATE INDEX process_events_ingest_time_brin ON linux_agent.process_events USING brin (ingest_time) WITH (pages_per_range = 32, autosummarize = on);
CREATE INDEX process_events_event_time_brin ON linux_agent.process_events USING brin (event_time) WITH (pages_per_range = 32, autosummarize = on);
INSERT INTO appliance.event_tables (schema_name, table_name) VALUES ('linux_agent', 'process_events');

CREATE TABLE linux_agent.file_events (
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint NOT NULL,
    source_id uuid NOT NULL,
    event_time timestamptz NOT NULL,
    ingest_time timestamptz NOT NULL,
    action smallint NOT NULL,
    pid integer NOT NULL,
    uid integer NOT NULL,
    path text NOT NULL,
    target_path text,
    bytes_written bigint NOT NULL,
    entropy real
) PARTITION BY RANGE (ingest_time);
CREATE INDEX file_events_ingest_time_brin ON linux_agent.file_events USING brin (ingest_time) WITH (pages_per_range = 32, autosummarize = on);
CREATE INDEX file_events_event_time_brin ON linux_agent.file_events USING brin (event_time) WITH (pages_per_range = 32, autosummarize = on);
INSERT INTO appliance.event_tables (schema_name, table_name) VALUES ('linux_agent', 'file_events');

CREATE TABLE linux_agent.network_events (
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint NOT NULL,
    source_id uuid NOT NULL,
    event_time timestamptz NOT NULL,
    ingest_time timestamptz NOT NULL,
    action smallint NOT NULL,
    pid integer NOT NULL,
    uid integer NOT NULL,
    protocol smallint NOT NULL,
    local_addr inet NOT NULL,
    local_port integer NOT NULL,
    remote_addr inet NOT NULL,
    remote_port integer NOT NULL,
    bytes_sent bigint NOT NULL,
    bytes_received bigint NOT NULL
) PARTITION BY RANGE (ingest_time);
CREATE INDEX network_events_ingest_time_brin ON linux_agent.network_events USING brin (ingest_time) WITH (pages_per_range = 32, autosummarize = on);
CREATE INDEX network_events_event_time_brin ON linux_agent.network_events USING brin (event_time) WITH (pages_per_range = 32, autosummarize = on);
INSERT INTO appliance.event_tables (schema_name, table_name) VALUES ('linux_agent', 'network_events');

CREATE TABLE linux_agent.quarantine (
    received_at timestamptz NOT NULL,
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint,
    table_name text NOT NULL,
    reason_code smallint NOT NULL,
    reason text NOT NULL,
    payload bytea
) WITH (fillfactor = 100);
CREATE INDEX quarantine_received_at_brin ON linux_agent.quarantine USING brin (received_at) WITH (autosummarize = on);

-- windows_agent: Windows agent relay (ETW telemetry forwarded onto this host)
CREATE TABLE windows_agent.process_events (
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint NOT NULL,
    source_id uuid NOT NULL,
    event_time timestamptz NOT NULL,
    ingest_time timestamptz NOT NULL,
    action smallint NOT NULL,
    pid bigint NOT NULL,
    ppid bigint NOT NULL,
    user_sid text NOT NULL,
    image_path text NOT NULL,
    command_line text NOT NULL,
    integrity_level smallint NOT NULL,
    sha256 bytea
) PARTITION BY RANGE (ingest_time);
CREATE INDEX process_events_ingest_time_brin ON windows_agent.process_events USING brin (ingest_time) WITH (pages_per_range = 32, autosummarize = on);
CREATE INDEX process_events_event_time_brin ON windows_agent.process_events USING brin (event_time) WITH (pages_per_range = 32, autosummarize = on);
INSERT INTO appliance.event_tables (schema_name, table_name) VALUES ('windows_agent', 'process_events');

CREATE TABLE windows_agent.file_events (
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint NOT NULL,
    source_id uuid NOT NULL,
    event_time timestamptz NOT NULL,
    ingest_time timestamptz NOT NULL,
    action smallint NOT NULL,
    pid bigint NOT NULL,
    user_sid text NOT NULL,
    path text NOT NULL,
    target_path text,
    bytes_written bigint NOT NULL,
    entropy real
) PARTITION BY RANGE (ingest_time);
CREATE INDEX file_events_ingest_time_brin ON windows_agent.file_events USING brin (ingest_time) WITH (pages_per_range = 32, autosummarize = on);
CREATE INDEX file_events_event_time_brin ON windows_agent.file_events USING brin (event_time) WITH (pages_per_range = 32, autosummarize = on);
INSERT INTO appliance.event_tables (schema_name, table_name) VALUES ('windows_agent', 'file_events');

CREATE TABLE windows_agent.registry_events (
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint NOT NULL,
    source_id uuid NOT NULL,
    event_time timestamptz NOT NULL,
    ingest_time timestamptz NOT NULL,
    action smallint NOT NULL,
    pid bigint NOT NULL,
    user_sid text NOT NULL,
    key_path text NOT NULL,
    value_name text,
    value_type smallint NOT NULL,
    value_data bytea
) PARTITION BY RANGE (ingest_time);
CREATE INDEX registry_events_ingest_time_brin ON windows_agent.registry_events USING brin (ingest_time) WITH (pages_per_range = 32, autosummarize = on);
CREATE INDEX registry_events_event_time_brin ON windows_agent.registry_events USING brin (event_time) WITH (pages_per_range = 32, autosummarize = on);
INSERT INTO appliance.event_tables (schema_name, table_name) VALUES ('windows_agent', 'registry_events');

CREATE TABLE windows_agent.network_events (
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint NOT NULL,
    source_id uuid NOT NULL,
    event_time timestamptz NOT NULL,
    ingest_time timestamptz NOT NULL,
    action smallint NOT NULL,
    pid bigint NOT NULL,
    protocol smallint NOT NULL,
    local_addr inet NOT NULL,
    local_port integer NOT NULL,
    remote_addr inet NOT NULL,
    remote_port integer NOT NULL,
    bytes_sent bigint NOT NULL,
    bytes_received bigint NOT NULL
) PARTITION BY RANGE (ingest_time);
CREATE INDEX network_events_ingest_time_brin ON windows_agent.network_events USING brin (ingest_time) WITH (pages_per_range = 32, autosummarize = on);
CREATE INDEX network_events_event_time_brin ON windows_agent.network_events USING brin (event_time) WITH (pages_per_range = 32, autosummarize = on);
INSERT INTO appliance.event_tables (schema_name, table_name) VALUES ('windows_agent', 'network_events');

CREATE TABLE windows_agent.quarantine (
    received_at timestamptz NOT NULL,
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    producer_seq bigint,
    table_name text NOT NULL,
    reason_code smallint NOT NULL,
    reason text NOT NULL,
    payload bytea
) WITH (fillfactor = 100);
CREATE INDEX quarantine_received_at_brin ON windows_agent.quarantine USING brin (received_at) WITH (autosummarize = on);

