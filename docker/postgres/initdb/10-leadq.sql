-- Run once by the postgres:15 image on an empty data volume (docker-entrypoint-initdb.d), as
-- the image's superuser. Two roles, neither a superuser nor BYPASSRLS (docs/security.md):
--   leadq_owner  owns the database and schema and runs `leadq migrate` (the compose `migrate`
--                service, LEADQ_MIGRATION_DATABASE_URL), which grants leadq what it needs;
--   leadq        the runtime role of api, worker and the CLI: rows only, no DDL, and on
--                audit_log only SELECT and INSERT, so row-level security and the audit trail
--                hold even against raw SQL.
CREATE ROLE leadq_owner LOGIN PASSWORD 'leadq_owner' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION;
CREATE ROLE leadq LOGIN PASSWORD 'leadq' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION;
CREATE DATABASE leadq OWNER leadq_owner;
