-- Core-facing views, rendered from src/model/schema.rs by `applianced generate-sql`; do not edit by hand.
-- Owned by ransomeye_owner (not security_invoker), so Core's reader role needs SELECT on the
-- view only and holds nothing on any base table. Only columns marked core_view are exposed.

SET LOCAL ROLE ransomeye_owner;

CREATE VIEW core_api.linux_agent_process_events WITH (security_barrier = true) AS
    SELECT producer_id, producer_seq, source_id, event_time, ingest_time, action, pid, ppid, uid, gid, exe, cmdline, sha256
    FROM linux_agent.process_events;

CREATE VIEW core_api.linux_agent_file_events WITH (security_barrier = true) AS
    SELECT producer_id, producer_seq, source_id, event_time, ingest_time, action, pid, uid, path, target_path, bytes_written, entropy
    FROM linux_agent.file_events;

CREATE VIEW core_api.linux_agent_network_events WITH (security_barrier = true) AS
    SELECT producer_id, producer_seq, source_id, event_time, ingest_time, action, pid, uid, protocol, local_addr, local_port, remote_addr, remote_port, bytes_sent, bytes_received
    FROM linux_agent.network_events;

CREATE VIEW core_api.windows_agent_process_events WITH (security_barrier = true) AS
    SELECT producer_id, producer_seq, source_id, event_time, ingest_time, action, pid, ppid, user_sid, image_path, command_line, integrity_level, sha256
    FROM windows_agent.process_events;

CREATE VIEW core_api.windows_agent_file_events WITH (security_barrier = true) AS
    SELECT producer_id, producer_seq, source_id, event_time, ingest_time, action, pid, user_sid, path, target_path, bytes_written, entropy
    FROM windows_agent.file_events;

CREATE VIEW core_api.windows_agent_registry_events WITH (security_barrier = true) AS
    SELECT producer_id, producer_seq, source_id, event_time, ingest_time, action, pid, user_sid, key_path, value_name, value_type
    FROM windows_agent.registry_events;

CREATE VIEW core_api.windows_agent_network_events WITH (security_barrier = true) AS
    SELECT producer_id, producer_seq, source_id, event_time, ingest_time, action, pid, protocol, local_addr, local_port, remote_addr, remote_port, bytes_sent, bytes_received
    FROM windows_agent.network_events;

CREATE VIEW core_api.dpi_flows WITH (security_barrier = true) AS
    SELECT producer_id, producer_seq, source_id, event_time, ingest_time, flow_id, protocol, src_addr, src_port, dst_addr, dst_port, packets, bytes, duration_ms, app_protocol
    FROM dpi.flows;

CREATE VIEW core_api.dpi_dns WITH (security_barrier = true) AS
    SELECT producer_id, producer_seq, source_id, event_time, ingest_time, flow_id, query_name, query_type, response_code, answers
    FROM dpi.dns;

CREATE VIEW core_api.dpi_tls WITH (security_barrier = true) AS
    SELECT producer_id, producer_seq, source_id, event_time, ingest_time, flow_id, sni, version, cipher_suite, ja3, cert_sha256
    FROM dpi.tls;

CREATE VIEW core_api.dpi_smb WITH (security_barrier = true) AS
    SELECT producer_id, producer_seq, source_id, event_time, ingest_time, flow_id, command, dialect, share, path, status, bytes
    FROM dpi.smb;

CREATE VIEW core_api.dpi_http WITH (security_barrier = true) AS
    SELECT producer_id, producer_seq, source_id, event_time, ingest_time, flow_id, method, host, uri, status_code, user_agent, content_type, bytes
    FROM dpi.http;

CREATE VIEW core_api.core_detections WITH (security_barrier = true) AS
    SELECT producer_id, producer_seq, source_id, event_time, ingest_time, detection_id, rule_id, severity, score, subject_source_id, summary, evidence
    FROM core.detections;

CREATE VIEW core_api.core_incident_transitions WITH (security_barrier = true) AS
    SELECT producer_id, producer_seq, source_id, event_time, ingest_time, incident_id, from_state, to_state, actor, reason
    FROM core.incident_transitions;

CREATE VIEW core_api.core_response_actions WITH (security_barrier = true) AS
    SELECT producer_id, producer_seq, source_id, event_time, ingest_time, action_id, incident_id, action_kind, target, requested_by, outcome, detail
    FROM core.response_actions;

