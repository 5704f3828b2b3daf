-- BRIN summarization by the maintenance pass without waiting on, or cancelling, a vacuum.
--
-- brin_summarize_new_values takes SHARE UPDATE EXCLUSIVE on the leaf, which only a vacuum or
-- an analyze of that leaf also holds. Waiting past deadlock_timeout (1 s) makes PostgreSQL
-- cancel a blocking autovacuum ("sending cancel to blocking autovacuum PID"), and a lock timeout
-- raised as an error aborts the maintenance session's transaction: PostgreSQL logs an ERROR and
-- counts a rollback in pg_stat_database for a step that is meant to be skipped (a vacuum
-- summarizes the leaf itself; the next pass retries after an analyze). This function waits at
-- most p_lock_timeout_ms and returns NULL instead of raising when the lock is not granted.
--
-- SECURITY INVOKER: brin_summarize_new_values requires the table's owner, and the maintenance
-- pass calls it after SET ROLE ransomeye_owner. No other role may execute it.

SET LOCAL ROLE ransomeye_owner;

CREATE FUNCTION appliance.summarize_brin_nowait(p_index regclass, p_lock_timeout_ms integer)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_lock_timeout_ms < 1 OR p_lock_timeout_ms > 60000 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('p_lock_timeout_ms %s outside 1..60000', p_lock_timeout_ms);
    END IF;
    -- Local to this statement's transaction (the caller runs it on its own).
    PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
    RETURN brin_summarize_new_values(p_index);
EXCEPTION WHEN lock_not_available THEN
    RETURN NULL;
END
$fn$;

REVOKE ALL ON FUNCTION appliance.summarize_brin_nowait(regclass, integer) FROM PUBLIC;
