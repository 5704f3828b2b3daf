-- Roles of the ownership matrix (src/model/matrix.rs, Role::ALL). Roles are cluster-wide.
-- No application role is SUPERUSER, CREATEDB, CREATEROLE, REPLICATION or BYPASSRLS;
-- the owner cannot log in. selftest checks every attribute against the matrix.
-- Connection limits: 4 writers x 8 + reader 8 + maintenance 2 = 42, below the 61 non-reserved
-- slots of max_connections = 64 (3 reserved for superusers), so no role can starve another.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM (VALUES
        ('ransomeye_owner', false, 0),
        ('ransomeye_maint', true, 2),
        ('ransomeye_core_writer', true, 8),
        ('ransomeye_dpi_writer', true, 8),
        ('ransomeye_linux_agent_writer', true, 8),
        ('ransomeye_windows_agent_writer', true, 8),
        ('ransomeye_core_reader', true, 8)
    ) AS v(name, login, connections)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r.name) THEN
            EXECUTE format('CREATE ROLE %I', r.name);
        END IF;
        EXECUTE format(
            'ALTER ROLE %I %s NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT %s PASSWORD NULL',
            r.name, CASE WHEN r.login THEN 'LOGIN' ELSE 'NOLOGIN' END, r.connections);
    END LOOP;
END
$$;
