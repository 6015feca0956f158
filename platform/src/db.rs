//! PostgreSQL access: an eager pool and the embedded migrations.
//!
//! The pool connects and pings at start-up, so a wrong `DATABASE_URL` fails the process at
//! boot with a clear message, not at the first request.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::secret::Secret;

/// The migrations in `migrations/`, embedded in the binary.
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
         CREATE ROLE leadq LOGIN PASSWORD '...' NOSUPERUSER NOBYPASSRLS; \
         CREATE DATABASE leadq OWNER leadq; (then point DATABASE_URL at it and run leadq migrate)"
    )]
    UnsafeRole {
        /// The role connected as.
        role: String,
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
    let value = match scope {
        Scope::Tenant(id) => id.to_string(),
        Scope::Platform => "platform".to_owned(),
    };
    let mut tx = pool.begin().await?;
    sqlx::query("select set_config('leadq.tenant_id', $1, true)")
        .bind(value)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
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

/// Refuses a role that would bypass row-level security (superuser or BYPASSRLS).
pub async fn check_runtime_role(pool: &PgPool) -> Result<(), DbError> {
    let (role, unsafe_role): (String, bool) = sqlx::query_as(
        "select current_user::text, rolsuper or rolbypassrls from pg_roles where rolname = current_user",
    )
    .fetch_one(pool)
    .await?;
    if unsafe_role {
        return Err(DbError::UnsafeRole { role });
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
