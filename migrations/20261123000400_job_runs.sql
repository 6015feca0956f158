-- One row per job: what the worker did with it, across all its attempts.
create table job_runs (
    job_id           uuid primary key,
    tenant_id        uuid not null references tenants (id),
    kind             text not null,
    message_id       text not null,
    correlation_id   text not null,
    status           text not null check (status in ('running', 'retrying', 'completed', 'dead')),
    attempts         integer not null,
    enqueued_at      timestamptz not null,
    first_started_at timestamptz not null,
    last_started_at  timestamptz not null,
    finished_at      timestamptz,
    duration_ms      bigint,
    last_error_code  text,
    updated_at       timestamptz not null default now()
);
create index job_runs_tenant_kind on job_runs (tenant_id, kind, last_started_at);
