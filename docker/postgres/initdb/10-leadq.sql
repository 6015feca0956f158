-- Run once by the postgres:15 image on an empty data volume (docker-entrypoint-initdb.d), as
-- the image's superuser. leadq's application role is deliberately NOT a superuser and has no
-- BYPASSRLS, so row-level security applies to it exactly as with scripts/dev and scripts/test;
-- CREATEDB lets test tooling make scratch databases.
CREATE ROLE leadq LOGIN PASSWORD 'leadq' NOSUPERUSER NOBYPASSRLS CREATEDB NOCREATEROLE NOREPLICATION;
CREATE DATABASE leadq OWNER leadq;
