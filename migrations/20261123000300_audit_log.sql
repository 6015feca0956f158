-- Append-only audit trail: who did what to which subject, with what outcome. No PII.
create table audit_log (
    id              bigint generated always as identity primary key,
    tenant_id       uuid references tenants (id),
    actor           text not null,
    action          text not null,
    subject         text not null,
    outcome         text not null,
    correlation_id  text not null,
    details         jsonb not null default '{}'::jsonb,
    at              timestamptz not null default now()
);
create index audit_log_tenant_at on audit_log (tenant_id, at);

create function audit_log_is_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'audit_log is append-only (% refused)', tg_op;
end;
$$;
create trigger audit_log_append_only
    before update or delete on audit_log
    for each row execute function audit_log_is_append_only();
