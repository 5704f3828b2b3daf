-- BRIN summarization by vacuum instead of autosummarize work items.
--
-- With autosummarize = on, every filled 32-page range of a leaf asks autovacuum for one
-- summarization work item. Autovacuum keeps at most 256 of them (NUM_WORKITEMS in
-- src/backend/postmaster/autovacuum.c); a 1,000,000-event burst fills thousands of ranges, and
-- each request that does not fit is logged at LOG level with its COPY statement
-- ("request for BRIN range summarization for index ... was not recorded"): 5,484 such
-- messages in 41 s of the lifecycle test's ingest, a log that grows without bound under
-- sustained load. The insert-triggered vacuum of each leaf (every 100,000 rows, set by
-- ensure_partitions) summarizes every unsummarized range anyway, so autosummarize is switched
-- off on the leaves: new day partitions get their BRIN indexes, autosummarize = off, before they
-- are attached (ATTACH adopts a matching index instead of building one), and the existing
-- indexes that can still receive rows are altered.
--
-- A partitioned index takes no storage parameters after creation (ALTER INDEX ... SET fails
-- with "not supported for partitioned indexes"), so the parents' partitioned BRIN indexes keep
-- autosummarize = on in their definition; no row is stored under them.

SET LOCAL ROLE ransomeye_owner;

CREATE OR REPLACE FUNCTION appliance.ensure_partitions(p_first_day date, p_days integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'
AS $fn$
DECLARE
    t record;
    ix record;
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
            -- Each single-column BRIN index of the parent, on the day partition with the
            -- parent's pages_per_range and autosummarize off; ATTACH below adopts it.
            FOR ix IN
                SELECT a.attname,
                       coalesce((SELECT o.option_value FROM pg_options_to_table(ic.reloptions) o
                                 WHERE o.option_name = 'pages_per_range'), '128') AS pages_per_range
                FROM pg_index x
                JOIN pg_class ic ON ic.oid = x.indexrelid
                JOIN pg_am am ON am.oid = ic.relam
                JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]
                WHERE x.indrelid = format('%I.%I', t.schema_name, t.table_name)::regclass
                  AND am.amname = 'brin' AND x.indnatts = 1
                ORDER BY ic.relname
            LOOP
                EXECUTE format('CREATE INDEX ON %I.%I USING brin (%I) WITH (pages_per_range = %s, autosummarize = off)',
                    t.schema_name, v_day, ix.attname, ix.pages_per_range);
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

-- Existing BRIN indexes with storage that can still receive rows: the leaves of today's
-- and later day partitions (older days no longer get rows), the quarantine tables and
-- the batch ledger. One ALTER each (SHARE UPDATE EXCLUSIVE on the index's table).
DO $do$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT format('%I.%I', n.nspname, ic.relname) AS index_name
        FROM pg_class ic
        JOIN pg_namespace n ON n.oid = ic.relnamespace
        JOIN pg_am am ON am.oid = ic.relam
        JOIN pg_index x ON x.indexrelid = ic.oid
        JOIN pg_class tc ON tc.oid = x.indrelid
        WHERE ic.relkind = 'i' AND am.amname = 'brin'
          AND n.nspname IN (SELECT e.schema_name FROM appliance.event_tables e UNION SELECT 'appliance')
          AND ic.reloptions @> ARRAY['autosummarize=on']
          AND (tc.relname !~ '_p[0-9]{8}_h[0-9]+$'
               OR to_date(substring(tc.relname FROM '_p([0-9]{8})_h[0-9]+$'), 'YYYYMMDD') >= current_date - 1)
        ORDER BY 1
    LOOP
        EXECUTE format('ALTER INDEX %s SET (autosummarize = off)', r.index_name);
    END LOOP;
END
$do$;
