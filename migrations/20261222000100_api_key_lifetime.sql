-- The lifetime a key was issued for (`--expires-in`), apart from `expires_at`: a rotation
-- shortens the old key's `expires_at` to the end of its overlap, so `expires_at - created_at`
-- no longer says what the key was issued for, and rotating the same key again (its
-- successor's secret was lost) gave the new successor the old key's age plus the overlap.
-- Null for keys issued without an expiry, and for keys issued before this column (their
-- `expires_at - created_at` is used, as before). Expand only: older binaries leave it null.
alter table api_keys add column lifetime_secs bigint
    check (lifetime_secs is null or lifetime_secs > 0);
