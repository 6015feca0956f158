//! PostgreSQL access: an eager pool and the embedded migrations.
//!
//! The pool connects and pings at start-up, so a wrong `DATABASE_URL` fails the process at
//! boot with a clear message, not at the first request.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::secret::Secret;

/// The migrations in `migrations/`, embedded in the binary. Run them as the migration owner
/// and then grant the runtime role its privileges ([`crate::roles::grant_runtime`]).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL does not parse.
    #[error("DATABASE_URL is not a valid PostgreSQL URL")]
    BadUrl(#[source] sqlx::Error),
    /// The server did not answer.
    #[error("could not connect to PostgreSQL")]
    Connect(#[source] sqlx::Error),
    /// The TLS handshake failed: a wrong CA, an expired or wrong-host certificate, a refused
    /// client certificate. One sentence, naming the setting to check; never the URL.
    #[error("could not connect to PostgreSQL over TLS: {0}")]
    Tls(String),
    /// Running the migrations failed.
    #[error("could not run migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The role would bypass row-level security.
    #[error(
        "PostgreSQL role {role:?} is a superuser or has BYPASSRLS, so row-level security would \
         not isolate tenants; refusing to run. Connect as a dedicated role instead, e.g.: \
         CREATE ROLE leadq LOGIN PASSWORD '...' NOSUPERUSER NOBYPASSRLS; (point DATABASE_URL \
         at it; a separate owner role runs leadq migrate, see docs/security.md)"
    )]
    UnsafeRole {
        /// The role connected as.
        role: String,
    },
    /// The role owns (or is a member of the owner of) a table or schema, so it could disable
    /// row-level security, drop a policy or rewrite the audit trail.
    #[error(
        "PostgreSQL role {role:?} owns {object} (or is a member of its owner), so it could \
         disable row-level security, drop policies and rewrite the audit trail; refusing to run. \
         Run leadq as a runtime role that owns nothing: let a separate owner role run \
         `leadq migrate` (LEADQ_MIGRATION_DATABASE_URL=postgres://leadq_owner:...@host/leadq; it \
         grants the runtime role named by LEADQ_RUNTIME_ROLE, default the user of DATABASE_URL, \
         what it needs) and point DATABASE_URL at the runtime role. To move an existing database \
         to the owner, as a superuser in that database: CREATE ROLE leadq_owner LOGIN PASSWORD \
         '...'; ALTER DATABASE leadq OWNER TO leadq_owner; REASSIGN OWNED BY {role} TO \
         leadq_owner; then run leadq migrate (see docs/security.md)"
    )]
    OwnerRole {
        /// The role connected as.
        role: String,
        /// What it owns, e.g. `table leads`.
        object: String,
    },
    /// A query failed.
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
}

/// Whom a transaction acts for. Every tenant-owned row is visible only in its tenant's scope
/// (see `migrations/*_row_level_security.sql`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One tenant.
    Tenant(uuid::Uuid),
    /// Platform-level rows (the audit trail of events no tenant owns).
    Platform,
}

/// Opens a transaction acting for `scope`: the one way leadq reads or writes tenant-owned
/// rows. The setting is transaction-local, so a pooled connection never carries it over.
pub async fn begin(
    pool: &PgPool,
    scope: Scope,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    // One round trip: `BEGIN` and the setting in one simple query. Every job and request
    // opens transactions, so the second round trip was a tenth of a lead's statements. The
    // value is spelled into the text, which is safe only because it is a UUID or a constant
    // (never caller text). Should the setting fail, the transaction is aborted and every
    // statement after it fails: nothing runs unscoped.
    begin_as(pool, &scope_value(scope)).await
}

/// The text of `scope` for `leadq.tenant_id`: a UUID or a constant, never caller text.
fn scope_value(scope: Scope) -> String {
    match scope {
        Scope::Tenant(id) => id.hyphenated().to_string(),
        Scope::Platform => "platform".to_owned(),
    }
}

/// Opens a transaction under a worker-wide scope that a policy names and that sees one table
/// across tenants: `audit-sealer` (unsealed `audit_log` rows, read only) or `run-recorder`
/// (`job_runs`). Never a caller's text: the value is spelled into the query (see [`begin`]).
pub async fn begin_service(
    pool: &PgPool,
    scope: &'static str,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    begin_as(pool, scope).await
}

async fn begin_as(
    pool: &PgPool,
    value: &str,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    begin_with_scope(pool, "begin", value).await
}

/// `begin` (the statement, with its options) and the scope `value`, in one round trip.
async fn begin_with_scope(
    pool: &PgPool,
    begin: &str,
    value: &str,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    pool.begin_with(format!(
        "{begin}; select set_config('leadq.tenant_id', '{value}', true)"
    ))
    .await
}

/// Opens a transaction acting for `scope` that reads one snapshot throughout (`repeatable
/// read`): for a check that compares two reads (a baseline's replayed changes with the live
/// configuration), which a change committed between them would set apart. See [`begin`].
pub async fn begin_snapshot(
    pool: &PgPool,
    scope: Scope,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    begin_with_scope(
        pool,
        "begin isolation level repeatable read",
        &scope_value(scope),
    )
    .await
}

/// Opens a transaction that may see the API key with `prefix` (and no other row of any
/// tenant): authentication, which must find the key before it knows the tenant.
pub async fn begin_key_lookup(
    pool: &PgPool,
    prefix: &str,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("select set_config('leadq.key_prefix', $1, true)")
        .bind(prefix)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Turns sorts off for the rest of the transaction on `conn`, so that an `ORDER BY … LIMIT`
/// walks an index in order and stops at its limit. Row-level security's policy is a condition
/// the planner cannot estimate and guesses at 0.5 % of the rows: to it, walking an index looks
/// like a walk through most of a tenant's rows for the few that pass, and reading all of them
/// to sort them looks cheaper — a claim, a page or a sweep's batch then reads everything the
/// tenant has (docs/bench/plans.md: the CRM claim, the audit page, the recent runs, the reseal
/// sweep, each with a test in `tests/it/read_plans.rs` or `tests/it/crm.rs`). For a transaction
/// whose statements are such walks, and nothing that needs a sort.
pub async fn without_sorts(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("set local enable_sort = off")
        .execute(conn)
        .await
        .map(|_| ())
}

/// What the connected role is, as far as tenant isolation is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleFacts {
    /// `current_user`.
    pub role: String,
    /// Superuser: row-level security does not apply.
    pub superuser: bool,
    /// BYPASSRLS: row-level security does not apply.
    pub bypass_rls: bool,
    /// A table or schema of the database the role owns, directly or through membership in
    /// its owner (e.g. `table leads`, `schema public`); `None` when it owns nothing.
    pub owns: Option<String>,
}

/// Reads [`RoleFacts`] of the connected role.
pub async fn role_facts(pool: &PgPool) -> Result<RoleFacts, sqlx::Error> {
    let (role, superuser, bypass_rls, owns): (String, bool, bool, Option<String>) = sqlx::query_as(
        "select current_user::text, r.rolsuper, r.rolbypassrls,
                coalesce(
                  (select 'table ' || c.relname from pg_class c
                     join pg_namespace n on n.oid = c.relnamespace
                    where c.relkind in ('r', 'p')
                      and n.nspname not in ('pg_catalog', 'information_schema')
                      and n.nspname not like 'pg_toast%'
                      and pg_has_role(current_user, c.relowner, 'USAGE')
                    order by c.relname limit 1),
                  (select 'schema ' || n.nspname from pg_namespace n
                    where n.nspname not in ('pg_catalog', 'information_schema')
                      and n.nspname not like 'pg_toast%' and n.nspname not like 'pg_temp%'
                      and pg_has_role(current_user, n.nspowner, 'USAGE')
                    order by n.nspname limit 1))
           from pg_roles r where r.rolname = current_user",
    )
    .fetch_one(pool)
    .await?;
    Ok(RoleFacts {
        role,
        superuser,
        bypass_rls,
        owns,
    })
}

/// Refuses a role that would bypass row-level security (superuser or BYPASSRLS) or that owns
/// a table or schema (it could switch row-level security off or rewrite the audit trail).
pub async fn check_runtime_role(pool: &PgPool) -> Result<(), DbError> {
    let facts = role_facts(pool).await?;
    if facts.superuser || facts.bypass_rls {
        return Err(DbError::UnsafeRole { role: facts.role });
    }
    if let Some(object) = facts.owns {
        return Err(DbError::OwnerRole {
            role: facts.role,
            object,
        });
    }
    Ok(())
}

/// Whether `e` says the database could not be reached (down, restarting, refusing connections,
/// pool exhausted) rather than that a statement was wrong. Callers wait and try again for
/// these, without blaming the request or the job: SQLSTATE class 08 (connection exception),
/// 57P01-57P03 (shutting down / cannot connect now), I/O, TLS and pool timeouts.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

/// Connects eagerly (with a timeout) and returns a pool of at most `max` connections. TLS
/// follows the URL's `sslmode`, `sslrootcert`, `sslcert` and `sslkey` (the `LEADQ_PG_*_FILE`
/// settings are added to the URL at load time); a failed handshake is a [`DbError::Tls`].
pub async fn connect(url: &Secret, max: u32) -> Result<PgPool, DbError> {
    crate::tls::install_crypto_provider();
    let opts: PgConnectOptions = url.expose().parse().map_err(DbError::BadUrl)?;
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts.application_name("leadq"))
        .await
        .map_err(
            |e| match crate::tls::diagnose(&e, "LEADQ_PG_CA_FILE or the URL's sslrootcert") {
                Some(reason) => DbError::Tls(reason),
                None => DbError::Connect(e),
            },
        )
}

/// Applies every pending migration. sqlx takes an advisory lock, so a second migrator waits.
/// Run one at a time all the same: a migration that builds an index `concurrently` waits for
/// every open snapshot, including that of a migrator waiting on the lock, and PostgreSQL then
/// aborts one of the two as a deadlock (see `migrations/README.md`).
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await.map_err(DbError::Migrate)
}

/// The JSON path of the first string (or key) in `v` that PostgreSQL cannot store: `text` and
/// `jsonb` refuse U+0000, whatever the encoding it arrived in. The edge refuses such input
/// (a 4xx) instead of letting a handler meet the database's error. Depth is bounded by the
/// JSON parser (serde_json refuses nesting over 128).
pub fn unstorable_path(v: &serde_json::Value) -> Option<String> {
    fn walk(v: &serde_json::Value, path: &mut String) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("/{i}"));
                let bad = walk(item, path);
                if !bad {
                    path.truncate(len);
                }
                bad
            }),
            serde_json::Value::Object(map) => map.iter().any(|(k, item)| {
                let len = path.len();
                path.push('/');
                push_key(path, k);
                let bad = k.contains('\0') || walk(item, path);
                if !bad {
                    path.truncate(len);
                }
                bad
            }),
            _ => false,
        }
    }
    // A key in the path, NUL spelled out, at most KEY_SHOWN characters of it: the path says
    // where, and is echoed in the error body, so it never carries a long key back whole.
    fn push_key(path: &mut String, k: &str) {
        const KEY_SHOWN: usize = 64;
        let mut chars = k.chars();
        for c in chars.by_ref().take(KEY_SHOWN) {
            if c == '\0' {
                path.push_str("\\u0000");
            } else {
                path.push(c);
            }
        }
        if chars.next().is_some() {
            path.push('…');
        }
    }
    let mut path = String::new();
    walk(v, &mut path).then(|| if path.is_empty() { "/".into() } else { path })
}

/// Whether `t` is a time the edge takes: years 1 to 9999, RFC 3339's four digits. chrono parses
/// signed and longer years too (`-5000-01-01T00:00:00Z`, `+60000-…`), which `timestamptz`
/// refuses below 4713 BC and above 294276 AD; a filter or a payload with such a time is refused
/// where it arrives (a 4xx), never met as the database's error in a handler or a retried job.
pub fn storable_time(t: &chrono::DateTime<chrono::Utc>) -> bool {
    use chrono::Datelike;
    (1..=9999).contains(&t.year())
}

#[cfg(test)]
mod unstorable_tests {
    #[test]
    fn nul_anywhere_is_found_with_its_path() {
        let ok = serde_json::json!({"a": ["x", {"b": "y"}], "n": 1});
        assert_eq!(super::unstorable_path(&ok), None);
        let v: serde_json::Value =
            serde_json::from_str(r#"{"a": ["x", {"b": "y\u0000z"}]}"#).unwrap();
        assert_eq!(super::unstorable_path(&v).as_deref(), Some("/a/1/b"));
        let k: serde_json::Value = serde_json::from_str(r#"{"k\u0000": 1}"#).unwrap();
        assert!(super::unstorable_path(&k).is_some());
        // A long key is named by its first 64 characters.
        let long = format!("{{\"{}\": \"a\\u0000\"}}", "k".repeat(5000));
        let v: serde_json::Value = serde_json::from_str(&long).unwrap();
        assert_eq!(
            super::unstorable_path(&v),
            Some(format!("/{}…", "k".repeat(64)))
        );
        // An escaped backslash followed by "u0000" is text, not NUL.
        let t: serde_json::Value = serde_json::from_str(r#"{"a": "\\u0000"}"#).unwrap();
        assert_eq!(super::unstorable_path(&t), None);
    }

    #[test]
    fn times_outside_four_digit_years_are_not_storable() {
        use chrono::{DateTime, Utc};
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert!(super::storable_time(&at("2026-12-07T10:00:00Z")));
        assert!(super::storable_time(&at("0001-01-01T00:00:00Z")));
        assert!(super::storable_time(&at("9999-12-31T23:59:59Z")));
        assert!(!super::storable_time(&at("-5000-01-01T00:00:00Z")));
        assert!(!super::storable_time(&at("+60000-01-01T00:00:00Z")));
        assert!(!super::storable_time(&DateTime::<Utc>::MIN_UTC));
    }
}
