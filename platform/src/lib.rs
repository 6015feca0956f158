//! Shared foundations of leadq, beneath `jobs`, `api` and `worker`.
//!
//! Everything here is needed by more than one process and knows nothing of HTTP or of the
//! queue: it must stay small so that every crate can depend on it without pulling in the world.
//!
//! # Layout
//! - [`config`]: `Settings::from_env`, which reads every variable and reports *all* problems at once.
//! - [`scrub`]: the scrubber for logs, Sentry events and echoed ids.
//! - [`secret`]: [`secret::Secret`], a string that never prints.
//! - [`telemetry`]: JSON logs on stderr, Sentry, the Prometheus recorder.
//! - [`metrics`]: every metric name and label spelled once.
//! - [`db`]: eager PostgreSQL pool and the migrator.
//! - [`roles`]: the migration owner and the runtime role's grants.
//! - [`operators`]: the registry of platform operators and their permissions.
//! - [`keys`]: API-key administration (create, list, revoke, rotate), audited.
//! - [`keyring`]: named 256-bit keys with rotation (envelope signing, data encryption).
//! - [`apikey`]: API-key generation, hashing and constant-time verification.
//! - [`tenant`]: tenant creation and lookup.
//! - [`audit`]: the append-only audit log writer, its chain verifier and heartbeat.
//! - [`checks`]: the last result of each recurring check, and when keys were first seen.
//! - [`shutdown`]: the one `shutdown_signal()` every process uses.
//! - [`tls`]: the process's rustls crypto provider; plain words for a failed TLS handshake.
//! - [`ttl`]: the short-lived caches of the hot paths, with explicit invalidation.

pub mod apikey;
pub mod audit;
pub mod changes;
pub mod checks;
pub mod config;
pub mod db;
pub mod keyring;
pub mod keys;
pub mod metrics;
pub mod operators;
pub mod principals;
pub mod roles;
pub mod scrub;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
pub mod tenant;
pub mod tls;
pub mod ttl;
