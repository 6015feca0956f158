-- What the on-call side remembers between runs, platform-wide (no tenant owns these rows, so
-- no row-level security):
--
-- platform_checks: the last result of each recurring check the scheduler runs (`audit_verify`,
-- `canary`), read by the security health checks, the metrics and `leadq doctor`. One row per
-- check, overwritten by every run; the history lives in the metrics and the logs.
create table platform_checks (
    name         text primary key,
    ran_at       timestamptz not null,
    ok           boolean not null,
    -- What an operator needs to act: counts, the failing scope or step. Never a secret or
    -- personal data.
    detail       text not null,
    duration_ms  bigint not null default 0,
    last_ok_at   timestamptz
);

-- key_sightings: when a process first saw each signing or data key (by key id), so the
-- security health checks can tell a key's age without the key carrying a date.
create table key_sightings (
    purpose     text not null check (purpose in ('signing', 'data')),
    kid         text not null,
    first_seen  timestamptz not null default now(),
    primary key (purpose, kid)
);
