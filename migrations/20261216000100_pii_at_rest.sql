-- Personal data at rest (docs/security.md, "Personal data at rest"). From this release,
-- leads.email, phone, name and username and lead_messages.content hold sealed values
-- (`sealed:v1:<kid>:…`, opened only by leadq with LEADQ_DATA_KEYS); email and phone also get
-- a keyed blind index (LEADQ_PII_INDEX_KEYS) so a lead is still found by either.
--
-- Expand only: the columns keep their names and type, so rows written before this release
-- stay readable (as clear values) until the worker's `pii_reseal` schedule, or `leadq pii
-- reseal`, converts them in batches while everything runs. The index columns start empty,
-- so the partial indexes below are built from no rows.
alter table leads
    add column email_index text,
    add column phone_index text;

create index leads_email_index on leads (tenant_id, email_index) where email_index is not null;
create index leads_phone_index on leads (tenant_id, phone_index) where phone_index is not null;
