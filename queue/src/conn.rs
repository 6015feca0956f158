//! The connection to Redis (standalone or Cluster) and the Lua scripts the engine runs.
//!
//! Every engine call goes through one multiplexed [`Conn`]; blocking waits get their own
//! (see `Queue::blocking_connection`). The scripts are loaded once per `Queue` and invoked by
//! hash (`EVALSHA`, falling back to `EVAL` after a Redis restart).

use std::time::Duration;

use leadq_platform::config::RedisTls;
use leadq_platform::secret::Secret;
use redis::aio::ConnectionManager;

use crate::QueueError;

/// The engine's Lua scripts (`lua/*.lua`), one per atomic operation.
pub(crate) struct Scripts {
    pub(crate) enqueue: redis::Script,
    pub(crate) fetch: redis::Script,
    pub(crate) ack: redis::Script,
    pub(crate) renew: redis::Script,
    pub(crate) reap: redis::Script,
    pub(crate) heartbeat: redis::Script,
    pub(crate) release_owned: redis::Script,
    pub(crate) erase: redis::Script,
    pub(crate) admit: redis::Script,
    pub(crate) dlq: redis::Script,
    pub(crate) tenant: redis::Script,
    pub(crate) lead: redis::Script,
    pub(crate) fire: redis::Script,
    pub(crate) guard_sighting: redis::Script,
    pub(crate) guard_strike: redis::Script,
    pub(crate) guard_budget: redis::Script,
    pub(crate) locate: redis::Script,
}

/// A script that rate-limits, with the GCRA of `lua/gcra.lua` before it.
fn gcra(body: &str) -> redis::Script {
    redis::Script::new(&format!("{}\n{body}", include_str!("lua/gcra.lua")))
}

/// A script that adds ready jobs, with the fair-ordering functions of `lua/fair.lua` before it.
fn fair(body: &str) -> redis::Script {
    redis::Script::new(&format!("{}\n{body}", include_str!("lua/fair.lua")))
}

impl Scripts {
    pub(crate) fn load() -> Self {
        Self {
            enqueue: fair(include_str!("lua/enqueue.lua")),
            fetch: fair(include_str!("lua/fetch.lua")),
            ack: fair(include_str!("lua/ack.lua")),
            renew: redis::Script::new(include_str!("lua/renew.lua")),
            reap: fair(include_str!("lua/reap.lua")),
            heartbeat: redis::Script::new(include_str!("lua/heartbeat.lua")),
            release_owned: fair(include_str!("lua/release_owned.lua")),
            erase: redis::Script::new(include_str!("lua/erase.lua")),
            admit: gcra(include_str!("lua/admit.lua")),
            dlq: fair(include_str!("lua/dlq.lua")),
            tenant: fair(include_str!("lua/tenant.lua")),
            lead: redis::Script::new(include_str!("lua/lead.lua")),
            fire: redis::Script::new(include_str!("lua/fire.lua")),
            guard_sighting: redis::Script::new(include_str!("lua/guard_sighting.lua")),
            guard_strike: redis::Script::new(include_str!("lua/guard_strike.lua")),
            guard_budget: gcra(include_str!("lua/guard_budget.lua")),
            locate: redis::Script::new(include_str!("lua/locate.lua")),
        }
    }
}

/// A connection to a standalone Redis or to a Redis Cluster. Cheap to clone (both are
/// multiplexed) and both reconnect by themselves. On a Cluster every command and script is
/// routed by its keys: one queue shard's keys share a hash tag, so a script always runs on the
/// one primary that holds all of them.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

pub(crate) enum Client {
    // Boxed: with TLS a client holds its certificates (the variants differ a lot in size).
    Single(Box<redis::Client>),
    Cluster(Box<redis::cluster::ClusterClient>),
}

/// The `redis` crate's form of the configured TLS files; `None` when there are none (a
/// `rediss://` URL then trusts the system's roots).
pub(crate) fn certificates(tls: &RedisTls) -> Option<redis::TlsCertificates> {
    if tls.ca.is_none() && tls.client.is_none() {
        return None;
    }
    Some(redis::TlsCertificates {
        client_tls: tls
            .client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.bytes.clone(),
                client_key: key.bytes.clone(),
            }),
        root_cert: tls.ca.as_ref().map(|ca| ca.bytes.clone()),
    })
}

/// A failed start-up connection, in the one sentence an operator needs when it is TLS.
fn explain(e: redis::RedisError) -> QueueError {
    match leadq_platform::tls::diagnose(&e, "LEADQ_REDIS_CA_FILE") {
        Some(reason) => QueueError::Tls(reason),
        None => QueueError::Redis(e),
    }
}

impl Client {
    /// A client for `url` (comma-separated seed nodes when `cluster`). A `rediss://` URL
    /// speaks TLS, verified against `tls.ca` (or the system's roots), with `tls.client` as the
    /// client certificate when set.
    pub(crate) fn open(url: &Secret, cluster: bool, tls: &RedisTls) -> Result<Self, QueueError> {
        leadq_platform::tls::install_crypto_provider();
        let certs = certificates(tls);
        if cluster {
            let nodes: Vec<String> = url
                .expose()
                .split(',')
                .map(|u| u.trim().to_owned())
                .collect();
            let mut builder = redis::cluster::ClusterClient::builder(nodes)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            Ok(Client::Cluster(Box::new(builder.build().map_err(explain)?)))
        } else {
            let client = match certs {
                Some(certs) => redis::Client::build_with_tls(url.expose(), certs),
                None => redis::Client::open(url.expose()),
            };
            Ok(Client::Single(Box::new(client.map_err(explain)?)))
        }
    }

    /// One direct connection and a `PING`, without the connection manager's retries: at
    /// start-up a wrong CA or a plain server on a TLS port is reported at once, with its cause,
    /// instead of after the manager has retried for a while.
    pub(crate) async fn check(&self) -> Result<(), QueueError> {
        let Client::Single(c) = self else {
            return Ok(());
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut conn = c
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(explain)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(explain)?;
        Ok(())
    }

    /// Connects, giving up after [`START_TIMEOUT`] (the `redis` crate retries a failed first
    /// connection by itself; a TLS failure never succeeds on a retry).
    pub(crate) async fn connect(&self) -> Result<Conn, QueueError> {
        match tokio::time::timeout(START_TIMEOUT, self.connect_inner()).await {
            Ok(r) => r.map_err(explain),
            Err(_) => Err(QueueError::Timeout(START_TIMEOUT)),
        }
    }

    async fn connect_inner(&self) -> Result<Conn, redis::RedisError> {
        Ok(match self {
            Client::Single(c) => Conn::Single(
                c.get_connection_manager_with_config(
                    // The default 500 ms response timeout turns a busy Redis into errors
                    // (apalis-redis#76).
                    redis::aio::ConnectionManagerConfig::new()
                        .set_response_timeout(Some(RESPONSE_TIMEOUT))
                        .set_connection_timeout(Some(CONNECT_TIMEOUT)),
                )
                .await?,
            ),
            Client::Cluster(c) => Conn::Cluster(c.get_async_connection().await?),
        })
    }
}

const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const START_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
