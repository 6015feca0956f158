//! The edge: limits that hold before any credential is checked, keyed by source address and
//! shared by every API replica (the counters live in Redis, [`leadq_queue::guard`]).
//!
//! - **Failed authentications** (any 401 outside the webhooks) count against the source
//!   address; `LEADQ_AUTH_FAILURE_LIMIT` of them within `LEADQ_AUTH_FAILURE_WINDOW_SECS` lock
//!   it out for `LEADQ_AUTH_LOCKOUT_SECS`: every request from it is answered 429
//!   `auth_locked_out` with `Retry-After`, counted in
//!   `leadq_edge_refusals_total{reason="auth_lockout"}`. Webhook signature failures do not
//!   strike: Chatwoot and Telegram deliver from shared addresses, and one tenant's stale
//!   secret must not lock out every other tenant's deliveries (an HMAC cannot be guessed
//!   anyway). Each failure is also reported to the cross-tenant watch as `address:<ip>` acting
//!   on the tenant it named (the key's prefix, or the webhook's tenant slug).
//! - **Requests without credentials** (no `Authorization` and no console session cookie;
//!   probes, webhooks and the console's static files exempt) are held
//!   to `LEADQ_UNAUTHENTICATED_PER_SEC` per address (GCRA, burst
//!   `LEADQ_UNAUTHENTICATED_BURST`): 429 `unauthenticated_rate_limited`.
//!
//! The source address is the TCP peer, or, with `LEADQ_TRUST_FORWARDED_FOR=true` behind a
//! proxy, the last `X-Forwarded-For` entry (the address the proxy saw). If Redis cannot be
//! reached the edge fails open, with a warning: the API could not enqueue anything then
//! either, and refusing every request would add nothing but confusion.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use leadq_platform::metrics as m;

use crate::error::ApiError;
use crate::middleware::current_correlation_id;
use crate::AppState;

/// The Redis watch of authentication failures.
const AUTH_WATCH: &str = "authfail";
/// The Redis watch of requests without credentials.
const UNAUTH_WATCH: &str = "unauth";

/// The TCP peer of a connection, over plain TCP or TLS (the listener records it on every
/// request as `ConnectInfo<PeerAddr>`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, crate::tls::TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// The client's address: the TCP peer, or the last `X-Forwarded-For` entry when trusted (the
/// one the trusted proxy appended). `None` when neither is known (a router driven in-process).
pub fn client_addr(req: &Request, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for {
        let last = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back();
        // The last entry only: when it does not parse, the TCP peer, never an entry before it
        // (those are the client's own words: skipping an unreadable last entry let a client
        // choose the address its limits were counted under).
        if let Some(addr) = last.and_then(forwarded_addr) {
            return Some(addr);
        }
    }
    req.extensions()
        .get::<ConnectInfo<PeerAddr>>()
        .map(|ConnectInfo(PeerAddr(a))| a.ip())
}

/// An `X-Forwarded-For` entry as proxies write it: an address, or one with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn forwarded_addr(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
            inner.parse::<IpAddr>().ok()
        })
}

/// Whom an address's limits count: an IPv4 address, or an IPv6 address's /64 (one host's
/// allocation: counted per /128, it could take a fresh address, and a fresh budget, for every
/// request).
fn source_of(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = a.segments();
                let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{net}/64")
            }
        },
    }
}

/// Routes the edge leaves alone: probes and metrics (which has its own token).
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Whether a request carries credentials: an `Authorization` header (refused with a 401 that
/// counts towards the address's lockout when wrong), or, on a console page, a console session
/// cookie (which the console checks against Redis, answering a sign-in redirect if it is not a
/// session: no more work than this limit's own check). A session cookie sent anywhere else
/// is no credential there: it would let any request skip this limit.
fn presents_credentials(req: &Request) -> bool {
    let path = req.uri().path();
    let has_session = (path == "/console" || path.starts_with("/console/"))
        && req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains(&format!("{}=", crate::console::session::COOKIE)));
    has_session || req.headers().contains_key(header::AUTHORIZATION)
}

/// The tenant a failed authentication named: the webhook's tenant slug, or the presented API
/// key's prefix (which identifies a key, and so a tenant, without being a secret).
fn named_tenant(req: &Request) -> String {
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/v1/webhooks/") {
        if let Some((_, slug)) = rest.split_once('/') {
            return format!("slug:{}", slug.chars().take(64).collect::<String>());
        }
    }
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|k| leadq_platform::apikey::prefix_of(k.trim()))
        .map_or_else(|| "unknown".to_owned(), |p| format!("key:{p}"))
}

fn refuse(reason: &'static str, error: ApiError) -> Response {
    metrics::counter!(m::EDGE_REFUSALS_TOTAL, m::label::REASON => reason).increment(1);
    tracing::warn!(reason, "Refused at the edge.");
    error.into_response()
}

fn fail_open<T>(r: Result<T, leadq_queue::QueueError>, default: T) -> T {
    r.unwrap_or_else(|error| {
        tracing::warn!(error = %error, "Edge limits unavailable (Redis); letting the request through.");
        default
    })
}

/// The edge middleware (see the module docs). Runs inside the request span, so refusals carry
/// the correlation id.
pub async fn guard(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let edge = &app.settings.edge;
    let path = req.uri().path().to_owned();
    if exempt(&path) {
        return next.run(req).await;
    }
    let Some(addr) = client_addr(&req, edge.trust_forwarded_for) else {
        return next.run(req).await;
    };
    let source = source_of(addr);
    let queue = &app.queue;
    let webhook = path.starts_with("/v1/webhooks/");
    if !webhook {
        let left = fail_open(queue.locked_out(AUTH_WATCH, &source).await, Duration::ZERO);
        if !left.is_zero() {
            return refuse("auth_lockout", ApiError::AuthLockedOut(left));
        }
    }
    if !webhook && !path.starts_with("/console/assets/") && !presents_credentials(&req) {
        let over = queue
            .take_budget(
                UNAUTH_WATCH,
                &source,
                edge.unauthenticated_per_sec,
                edge.unauthenticated_burst,
            )
            .await;
        if let Some(wait) = fail_open(over, None) {
            return refuse(
                "unauthenticated_rate",
                ApiError::UnauthenticatedRateLimited(wait),
            );
        }
    }
    let named = named_tenant(&req);
    let res = next.run(req).await;
    if res.status() == StatusCode::UNAUTHORIZED {
        if !webhook {
            let locked = queue
                .strike(
                    AUTH_WATCH,
                    &source,
                    edge.auth_failure_limit,
                    edge.auth_failure_window,
                    edge.auth_lockout,
                )
                .await;
            if !fail_open(locked, Duration::ZERO).is_zero() {
                tracing::warn!(source = %source, "Locked out a source address after repeated authentication failures.");
            }
        }
        app.watch
            .saw(
                &format!("address:{source}"),
                &named,
                &current_correlation_id(),
            )
            .await;
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(values: &[&str]) -> Option<IpAddr> {
        let mut req = Request::new(axum::body::Body::empty());
        for v in values {
            req.headers_mut()
                .append("x-forwarded-for", v.parse().unwrap());
        }
        client_addr(&req, true)
    }

    #[test]
    fn only_the_last_forwarded_entry_counts() {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        assert_eq!(forwarded(&["10.9.9.9, 192.0.2.10"]), ip("192.0.2.10"));
        assert_eq!(forwarded(&["10.9.9.9", "192.0.2.10"]), ip("192.0.2.10"));
        assert_eq!(forwarded(&["10.9.9.9, 192.0.2.10:4711"]), ip("192.0.2.10"));
        assert_eq!(
            forwarded(&["10.9.9.9, [2001:db8::1]:4711"]),
            ip("2001:db8::1")
        );
        assert_eq!(forwarded(&["10.9.9.9, [2001:db8::1]"]), ip("2001:db8::1"));
        // An unreadable last entry is not skipped for the client's own entry before it: no
        // peer here (a router driven in-process), so no address at all.
        assert_eq!(forwarded(&["10.9.9.9, unknown"]), None);
        assert_eq!(forwarded(&["10.9.9.9, "]), None);
    }

    #[test]
    fn an_ipv6_client_counts_as_its_64() {
        let of = |s: &str| source_of(s.parse().unwrap());
        assert_eq!(of("192.0.2.10"), "192.0.2.10");
        assert_eq!(of("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(of("2001:db8:1:2:bbbb::7"), "2001:db8:1:2::/64");
        assert_eq!(of("::ffff:192.0.2.10"), "192.0.2.10");
    }
}
