-- Billing baselines (`leadq billing baseline`): each tenant's limits and kind entitlements as
-- an operator recorded them, with the reason, signed with an HMAC under the audit keyring
-- (the key is not in the database). The billing reconciliation compares the live
-- configuration with the latest baseline plus the audited changes since. Append-only for the
-- runtime role (`leadq migrate` revokes UPDATE and DELETE); an owner who edits a row is caught
-- by the signature.
create table billing_baselines (
    id        bigserial primary key,
    tenant_id uuid not null references tenants (id),
    taken_at  timestamptz not null,
    actor     text not null,
    reason    text not null check (length(reason) between 1 and 2000),
    config    jsonb not null,
    kid       text not null,
    mac       bytea not null
);
create index billing_baselines_tenant on billing_baselines (tenant_id, id);
alter table billing_baselines enable row level security;
alter table billing_baselines force row level security;
create policy tenant_isolation on billing_baselines
    using (tenant_id::text = leadq_scope())
    with check (tenant_id::text = leadq_scope());
