-- Partition maintenance and retention run without a superuser
-- (src/model/matrix.rs, Role::member_of). The supervisor logs in as
-- ransomeye_maint: it creates partitions through appliance.ensure_partitions
-- (SECURITY DEFINER), and for retention (DETACH ... CONCURRENTLY, DROP and
-- BRIN summarization need the tables' owner, and CONCURRENTLY cannot run in
-- a function) it switches with SET ROLE ransomeye_owner.
-- NOINHERIT: the membership gives nothing until that SET ROLE, so every
-- privilege check of ransomeye_maint itself (has_table_privilege, selftest,
-- tests/privilege_matrix.rs) stays exactly as the matrix lists it.
ALTER ROLE ransomeye_maint NOINHERIT;
GRANT ransomeye_owner TO ransomeye_maint;
