-- Schemas, the appliance's bookkeeping tables and its SECURITY DEFINER functions.
-- All objects are owned by the NOLOGIN role ransomeye_owner.

CREATE SCHEMA core AUTHORIZATION ransomeye_owner;
CREATE SCHEMA dpi AUTHORIZATION ransomeye_owner;
CREATE SCHEMA linux_agent AUTHORIZATION ransomeye_owner;
CREATE SCHEMA windows_agent AUTHORIZATION ransomeye_owner;
CREATE SCHEMA core_api AUTHORIZATION ransomeye_owner;
CREATE SCHEMA appliance AUTHORIZATION ransomeye_owner;

SET LOCAL ROLE ransomeye_owner;

-- Which writer role acts for which module. Filled by the ownership-matrix migration (0005).
-- LOGGED: losing it would make every lane fail its watermark calls.
CREATE TABLE appliance.module_roles (
    pg_role name PRIMARY KEY,
    module text NOT NULL
);

-- Registry of event tables, read by ensure_partitions(). Filled by 0003.
CREATE TABLE appliance.event_tables (
    schema_name name NOT NULL,
    table_name name NOT NULL,
    PRIMARY KEY (schema_name, table_name)
);

-- Dedup watermark: the highest committed sequence per (module, producer) and its epoch.
-- LOGGED: it is the exactly-once proof; it must survive a crash with the rows it covers.
-- fillfactor 50 leaves room on each page so every advance is a HOT update (no indexed
-- column changes: the only index is the primary key on (module, producer_id)).
CREATE TABLE appliance.producer_watermarks (
    module text NOT NULL,
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    last_seq bigint NOT NULL,
    batches bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (module, producer_id)
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 1000);

-- Ledger: one row per committed batch, written in the batch's own transaction.
-- LOGGED: the audit trail of what was acknowledged. Append-only, BRIN on time.
CREATE TABLE appliance.batch_ledger (
    module text NOT NULL,
    producer_id bigint NOT NULL,
    producer_epoch bigint NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    row_count bigint NOT NULL,
    committed_at timestamptz NOT NULL
) WITH (fillfactor = 100);
CREATE INDEX batch_ledger_committed_at_brin ON appliance.batch_ledger USING brin (committed_at)
    WITH (autosummarize = on);

-- The caller's module, from session_user (SET ROLE cannot change session_user, and only a
-- superuser can SET SESSION AUTHORIZATION).
CREATE FUNCTION appliance.caller_module() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_module text;
BEGIN
    SELECT m.module INTO v_module FROM appliance.module_roles m WHERE m.pg_role = session_user;
    IF v_module IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('session user %s is not an ingest role', session_user);
    END IF;
    RETURN v_module;
END
$fn$;

-- The caller's watermark for one producer (no row: the producer has never committed).
CREATE FUNCTION appliance.watermark_get(p_producer_id bigint)
RETURNS TABLE (producer_epoch bigint, last_seq bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN QUERY
        SELECT w.producer_epoch, w.last_seq
        FROM appliance.producer_watermarks w
        WHERE w.module = appliance.caller_module() AND w.producer_id = p_producer_id;
END
$fn$;

-- Advance the caller's watermark by one batch, inside the batch's transaction.
-- Compare-and-set under a row lock: a batch commits only if it continues the watermark
-- exactly (same epoch, first_seq = last_seq + 1) or opens a newer epoch at seq 1.
-- SQLSTATE RE001: sequence gap or overlap; RE002: stale epoch (fenced); 22023: bad range.
CREATE FUNCTION appliance.watermark_advance(
    p_producer_id bigint, p_epoch bigint, p_first_seq bigint, p_last_seq bigint, p_rows bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_module text := appliance.caller_module();
    v_epoch bigint;
    v_last bigint;
BEGIN
    IF p_first_seq < 1 OR p_last_seq < p_first_seq OR p_epoch < 0 OR p_rows < 0
       OR p_rows > p_last_seq - p_first_seq + 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('invalid batch range epoch %s seq %s..%s rows %s', p_epoch, p_first_seq, p_last_seq, p_rows);
    END IF;
    SELECT w.producer_epoch, w.last_seq INTO v_epoch, v_last
    FROM appliance.producer_watermarks w
    WHERE w.module = v_module AND w.producer_id = p_producer_id
    FOR UPDATE;
    IF NOT FOUND THEN
        IF p_first_seq <> 1 THEN
            RAISE EXCEPTION USING ERRCODE = 'RE001',
                MESSAGE = format('producer %s: first batch must start at seq 1, got %s', p_producer_id, p_first_seq);
        END IF;
        INSERT INTO appliance.producer_watermarks
            (module, producer_id, producer_epoch, last_seq, batches, updated_at)
        VALUES (v_module, p_producer_id, p_epoch, p_last_seq, 1, clock_timestamp());
    ELSIF p_epoch < v_epoch THEN
        RAISE EXCEPTION USING ERRCODE = 'RE002',
            MESSAGE = format('producer %s: epoch %s is fenced by epoch %s', p_producer_id, p_epoch, v_epoch);
    ELSIF p_epoch > v_epoch AND p_first_seq <> 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'RE001',
            MESSAGE = format('producer %s: new epoch %s must start at seq 1, got %s', p_producer_id, p_epoch, p_first_seq);
    ELSIF p_epoch = v_epoch AND p_first_seq <> v_last + 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'RE001',
            MESSAGE = format('producer %s: batch starts at %s, watermark is %s', p_producer_id, p_first_seq, v_last);
    ELSE
        UPDATE appliance.producer_watermarks
        SET producer_epoch = p_epoch, last_seq = p_last_seq, batches = batches + 1,
            updated_at = clock_timestamp()
        WHERE module = v_module AND producer_id = p_producer_id;
    END IF;
    INSERT INTO appliance.batch_ledger
        (module, producer_id, producer_epoch, first_seq, last_seq, row_count, committed_at)
    VALUES (v_module, p_producer_id, p_epoch, p_first_seq, p_last_seq, p_rows, clock_timestamp());
END
$fn$;

-- The caller module's partition window [lo_us, hi_us) in Unix microseconds:
-- from the latest first day to the day after the earliest last day over its
-- event tables' attached day partitions (partitions are contiguous: created
-- ahead without gaps, removed oldest first). The lane quarantines a row
-- whose ingest_time falls outside it instead of failing its batch (23514).
CREATE FUNCTION appliance.partition_window()
RETURNS TABLE (lo_us bigint, hi_us bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_module text := appliance.caller_module();
BEGIN
    RETURN QUERY
    WITH days AS (
        SELECT e.table_name, to_date(right(c.relname, 8), 'YYYYMMDD') AS d
        FROM appliance.event_tables e
        JOIN pg_namespace n ON n.nspname = e.schema_name
        JOIN pg_class p ON p.relnamespace = n.oid AND p.relname = e.table_name
        JOIN pg_inherits i ON i.inhparent = p.oid AND NOT i.inhdetachpending
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE e.schema_name = v_module
    ), per_table AS (
        SELECT table_name, min(d) AS first_day, max(d) AS last_day FROM days GROUP BY table_name
    )
    SELECT (extract(epoch FROM max(first_day)::timestamp) * 1000000)::bigint,
           (extract(epoch FROM (min(last_day) + 1)::timestamp) * 1000000)::bigint
    FROM per_table;
END
$fn$;

-- Create daily partitions (each hash-subpartitioned by producer_id) for every event table,
-- for p_days UTC days starting at p_first_day. Recipe: create the day table standalone,
-- create its hash leaves under it, then ATTACH it to the parent. ATTACH PARTITION takes
-- SHARE UPDATE EXCLUSIVE on the parent, which does not conflict with the ROW EXCLUSIVE
-- lock a running COPY holds, whereas CREATE TABLE ... PARTITION OF takes ACCESS EXCLUSIVE
-- on the parent and would queue behind (and block) ingest. lock_timeout bounds any wait.
-- New tables are owned by ransomeye_owner with no grants: writers reach them only through
-- the parent, exactly as the matrix says.
CREATE FUNCTION appliance.ensure_partitions(p_first_day date, p_days integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'
AS $fn$
DECLARE
    t record;
    d date;
    v_day text;
    v_created integer := 0;
BEGIN
    IF p_days < 1 OR p_days > 400 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('p_days %s outside 1..400', p_days);
    END IF;
    FOR t IN SELECT e.schema_name, e.table_name FROM appliance.event_tables e ORDER BY 1, 2 LOOP
        FOR i IN 0 .. p_days - 1 LOOP
            d := p_first_day + i;
            v_day := t.table_name || '_p' || to_char(d, 'YYYYMMDD');
            CONTINUE WHEN EXISTS (
                SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = t.schema_name AND c.relname = v_day);
            EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING DEFAULTS INCLUDING STORAGE) PARTITION BY HASH (producer_id)',
                t.schema_name, v_day, t.schema_name, t.table_name);
            FOR h IN 0 .. 3 LOOP
                -- Insert-only leaves: fillfactor 100 (no updates ever); insert-triggered
                -- autovacuum every 100k rows with freeze_min_age 0, so pages are frozen and
                -- all-visible soon after they are written instead of in a wraparound storm.
                EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES WITH (MODULUS 4, REMAINDER %s) '
                    'WITH (fillfactor = 100, autovacuum_vacuum_insert_threshold = 100000, '
                    'autovacuum_vacuum_insert_scale_factor = 0, autovacuum_freeze_min_age = 0, '
                    'autovacuum_vacuum_scale_factor = 0.05)',
                    t.schema_name, v_day || '_h' || h, t.schema_name, v_day, h);
            END LOOP;
            EXECUTE format('ALTER TABLE %I.%I ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                t.schema_name, t.table_name, t.schema_name, v_day,
                (d::timestamp AT TIME ZONE 'UTC'), ((d + 1)::timestamp AT TIME ZONE 'UTC'));
            v_created := v_created + 1;
        END LOOP;
    END LOOP;
    RETURN v_created;
END
$fn$;
