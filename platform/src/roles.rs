//! PostgreSQL roles: a migration owner that owns the schema, and a runtime role that only
//! reads and writes rows.
//!
//! `leadq migrate` connects as the owner (`LEADQ_MIGRATION_DATABASE_URL`) and, after the
//! migrations, [`grant_runtime`] gives the runtime role (`LEADQ_RUNTIME_ROLE`, by default the
//! user of `DATABASE_URL`) exactly what `leadq api` and `leadq worker` need:
//! - `SELECT, INSERT, UPDATE, DELETE` on every table, except
//! - `audit_log`: `SELECT, INSERT`, and `UPDATE` of the three seal columns only (`seal_seq`,
//!   `key_id`, `mac`, which the append-only trigger lets the sealer set once on an unsealed
//!   row); no `DELETE` or `TRUNCATE`: the trail is append-only even to raw SQL, and the
//!   trigger cannot be disabled by a role that does not own the table. `_sqlx_migrations`:
//!   `SELECT` only;
//! - `USAGE, SELECT` on the sequences; no `TRUNCATE`, `REFERENCES` or `TRIGGER` anywhere, and
//!   no `CREATE` on the schema, so no DDL;
//! - the same by default for tables and sequences the owner creates later.
//!
//! The runtime role never owns anything, so it cannot `ALTER TABLE … DISABLE ROW LEVEL
//! SECURITY`, drop a policy or a trigger, or drop a table; `leadq api`/`worker` refuse to start
//! as a role that does ([`crate::db::check_runtime_role`]).

use sqlx::PgPool;

/// Errors of [`grant_runtime`].
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The runtime role does not exist.
    #[error(
        "PostgreSQL role {0:?} (LEADQ_RUNTIME_ROLE, or the user of DATABASE_URL) does not exist; \
         create it first, e.g. CREATE ROLE {0} LOGIN PASSWORD '...' NOSUPERUSER NOBYPASSRLS;"
    )]
    NoSuchRole(String),
    /// A statement failed.
    #[error("could not grant the runtime role its privileges")]
    Db(#[from] sqlx::Error),
}

/// What [`grant_runtime`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granted {
    /// The runtime role has its privileges.
    Granted,
    /// The runtime role is the role migrating: it owns the schema, so there is nothing to
    /// grant, and `leadq api`/`worker` will refuse to run as it.
    SameRole,
}

/// Gives `role` the runtime privileges on every table and sequence of the `public` schema,
/// and the same by default on those the connected role (the owner) creates later. Idempotent:
/// run after every migration; privileges that were too broad are taken back. One
/// transaction, so the runtime role never sees a half-granted schema.
pub async fn grant_runtime(pool: &PgPool, role: &str) -> Result<Granted, GrantError> {
    let mut tx = pool.begin().await?;
    let (me, exists): (String, bool) = sqlx::query_as(
        "select current_user::text, exists (select from pg_roles where rolname = $1)",
    )
    .bind(role)
    .fetch_one(&mut *tx)
    .await?;
    if !exists {
        return Err(GrantError::NoSuchRole(role.to_owned()));
    }
    if me == role {
        return Ok(Granted::SameRole);
    }
    let r: String = sqlx::query_scalar("select quote_ident($1)")
        .bind(role)
        .fetch_one(&mut *tx)
        .await?;
    let statements = [
        "revoke create on schema public from public".to_owned(),
        format!("grant usage on schema public to {r}"),
        format!("revoke all on all tables in schema public from {r}"),
        format!("revoke all on all sequences in schema public from {r}"),
        format!("grant select, insert, update, delete on all tables in schema public to {r}"),
        format!("revoke update, delete on audit_log from {r}"),
        // Baselines are evidence: written once, never changed (their signature catches more).
        format!("revoke update, delete on billing_baselines from {r}"),
        // Sealing only: the append-only trigger allows setting these once, on an unsealed row.
        format!("grant update (seal_seq, key_id, mac) on audit_log to {r}"),
        format!("revoke insert, update, delete on _sqlx_migrations from {r}"),
        format!("grant usage, select on all sequences in schema public to {r}"),
        format!(
            "alter default privileges in schema public \
             grant select, insert, update, delete on tables to {r}"
        ),
        format!(
            "alter default privileges in schema public grant usage, select on sequences to {r}"
        ),
    ];
    for sql in &statements {
        sqlx::query(sql).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(Granted::Granted)
}
