-- Operator key actions (revoke, rotate) name a key by id before they know its tenant: a
-- transaction that sets leadq.key_id may see that one key (like leadq.key_prefix for
-- authentication), and nothing else.
drop policy tenant_isolation on api_keys;
create policy tenant_isolation on api_keys
    using (tenant_id::text = leadq_scope()
           or prefix = nullif(current_setting('leadq.key_prefix', true), '')
           or id::text = nullif(current_setting('leadq.key_id', true), ''))
    with check (tenant_id::text = leadq_scope());
