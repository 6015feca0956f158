-- Who a run acted for: the envelope's `user_id` (`api_key:<id>`, `webhook:<source>`,
-- `system:<kind>`, `operator:<name>`). Nullable: rows written before this release have none,
-- and older workers (during a rolling deploy) do not write it.
alter table job_runs add column user_id text;
