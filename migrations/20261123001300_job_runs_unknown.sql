-- `unknown`: a run whose end was never recorded (its worker died after the job's
-- acknowledgement, or PostgreSQL was down then) and whose job Redis no longer knows either
-- (its completion record trimmed, its dead letter purged). Set by `job_runs_reconcile`.
alter table job_runs drop constraint job_runs_status_check;
alter table job_runs add constraint job_runs_status_check
    check (status in ('running', 'retrying', 'completed', 'dead', 'unknown'));
