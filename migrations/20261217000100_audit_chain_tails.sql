-- Where each audit chain ends: the last sealed row's sequence number and link, recorded by the
-- sealer in the transaction that seals the batch, so the next batch starts from one primary-key
-- read. Found by searching the chain's sealed rows instead, that read grew with the chain (under
-- row-level security's predicate no index serves it in order): 16 ms a batch at 100k rows.
-- A cache of what the rows say, never trusted alone: the sealer uses it only when the row it
-- names is there with that link and no row follows it (an older release's sealer does not keep
-- it), else it searches the rows as before. Verification never reads it.
create table audit_chain_tails (
    chain     text primary key,
    seal_seq  bigint not null,
    mac       bytea not null
);

alter table audit_chain_tails enable row level security;
alter table audit_chain_tails force row level security;
create policy tenant_isolation on audit_chain_tails
    using (chain = leadq_scope())
    with check (chain = leadq_scope());
