-- What the security health checks read of every tenant, in one statement for many tenants.
--
-- The checks (`leadq_jobs::ops::security`, run by every API process every 30 seconds and for
-- each `GET /v1/health/security`) read each tenant's newest audit entry, its integration
-- secrets and its API keys about to expire, each in a transaction of the tenant's own, because
-- row-level security shows a transaction one tenant's rows. With 10,000 tenants that was about
-- 40,000 transactions and 9-11 seconds a run (docs/bench/plans.md, "Security health with 10,000
-- tenants"), so every API process spent a third of its time on them and a request for the
-- security health could time out.
--
-- These functions take a list of tenants and read each under its own scope: before each
-- tenant's statement they set `leadq.tenant_id` to that tenant, exactly as `db::begin` does for
-- a transaction, so row-level security shows the statement that tenant's rows and no other's.
-- They are SECURITY INVOKER (the caller's role and policies apply) and give the caller no power
-- it does not have: the runtime role sets the scope for every transaction it opens. They leave
-- the scope at the last tenant: call them in a transaction of their own, and run nothing after
-- them in it.

-- The newest audit entry of each of `tenants` that has one.
create function leadq_newest_audit_entries(tenants uuid[])
returns table (tenant_id uuid, newest timestamptz)
language plpgsql as $$
declare
    t uuid;
begin
    foreach t in array tenants loop
        perform set_config('leadq.tenant_id', t::text, true);
        return query
            select t, (select a.at from audit_log a where a.tenant_id = t
                        order by a.at desc limit 1);
    end loop;
end;
$$;

-- Each of `tenants`' integration secrets (as stored: sealed, or a digest) and how many of its
-- live API keys expire within `expiry`.
create function leadq_tenant_security_facts(tenants uuid[], expiry interval)
returns table (tenant_id uuid, chatwoot_account_id bigint, chatwoot_secret text,
               telegram_secret_sha256 bytea, keys_expiring bigint)
language plpgsql as $$
declare
    t uuid;
begin
    foreach t in array tenants loop
        perform set_config('leadq.tenant_id', t::text, true);
        return query
            select t, i.chatwoot_account_id, i.chatwoot_secret, i.telegram_secret_sha256,
                   (select count(*) from api_keys k
                     where k.tenant_id = t and k.revoked_at is null
                       and k.expires_at > now() and k.expires_at <= now() + expiry)
              from (values (1)) as one (x)
              left join tenant_integrations i on i.tenant_id = t;
    end loop;
end;
$$;
