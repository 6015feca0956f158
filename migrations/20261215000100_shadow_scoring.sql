-- Shadow comparison (`leadq shadow`): a tenant's candidate scoring rules run beside its live
-- rules on every lead_score and chatwoot_event job, and each job's two outcomes are recorded
-- side by side, so new weights are judged on real traffic before they go live. Expand-only:
-- older workers ignore both tables.

-- At most one candidate per tenant; no row: nothing is compared.
create table scoring_rules_candidate (
    tenant_id       uuid primary key references tenants (id),
    weights         jsonb not null default '{}'::jsonb,
    hot_threshold   integer not null,
    warm_threshold  integer not null,
    set_by          text not null,
    set_at          timestamptz not null default now(),
    check (0 < warm_threshold and warm_threshold <= hot_threshold and hot_threshold <= 100)
);
alter table scoring_rules_candidate enable row level security;
alter table scoring_rules_candidate force row level security;
create policy tenant_isolation on scoring_rules_candidate
    using (tenant_id::text = leadq_scope())
    with check (tenant_id::text = leadq_scope());

-- One row per job that ran both ways (live and shadow hold {score, tier}), or ran in shadow
-- mode only (live is null: the kind is not live for the tenant). No personal data.
create table shadow_comparisons (
    id          bigserial primary key,
    tenant_id   uuid not null references tenants (id),
    kind        text not null,
    job_id      uuid not null,
    subject     text not null,
    live        jsonb,
    shadow      jsonb not null,
    agrees      boolean,
    created_at  timestamptz not null default now()
);
create index shadow_comparisons_report on shadow_comparisons (tenant_id, kind, created_at);
alter table shadow_comparisons enable row level security;
alter table shadow_comparisons force row level security;
create policy tenant_isolation on shadow_comparisons
    using (tenant_id::text = leadq_scope())
    with check (tenant_id::text = leadq_scope());
