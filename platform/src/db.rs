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
    /// Running the migrations failed.
    #[error("could not run migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Connects eagerly (with a timeout) and returns a pool of at most `max` connections.
pub async fn connect(url: &Secret, max: u32) -> Result<PgPool, DbError> {
    let opts: PgConnectOptions = url.expose().parse().map_err(DbError::BadUrl)?;
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts.application_name("leadq"))
        .await
        .map_err(DbError::Connect)
}

/// Applies every pending migration. Safe to run concurrently: sqlx takes an advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await.map_err(DbError::Migrate)
}
