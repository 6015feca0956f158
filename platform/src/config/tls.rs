//! TLS settings: to Redis, to PostgreSQL, and on the API listener. Read with the rest of
//! [`super::Settings`], so a missing certificate file is reported with every other problem.
//!
//! - **Redis**: a `rediss://` URL turns TLS on; `LEADQ_REDIS_CA_FILE` is the CA bundle the
//!   server's certificate must chain to (default: the system's roots), and
//!   `LEADQ_REDIS_CLIENT_CERT_FILE` + `LEADQ_REDIS_CLIENT_KEY_FILE` a client certificate for
//!   mutual TLS. The files are read at start-up ([`RedisTls`]).
//! - **PostgreSQL**: the URL's own parameters (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`),
//!   or `LEADQ_PG_CA_FILE`, `LEADQ_PG_CLIENT_CERT_FILE`, `LEADQ_PG_CLIENT_KEY_FILE`, which are
//!   added to the URL as those parameters (one way or the other per parameter, not both). When
//!   a file is given and the URL names no `sslmode`, it becomes `verify-full`.
//! - `LEADQ_REQUIRE_TLS=true` refuses a `redis://` URL and a PostgreSQL `sslmode` other than
//!   `require`, `verify-ca` or `verify-full`.
//! - **API**: `LEADQ_API_TLS_CERT_FILE` + `LEADQ_API_TLS_KEY_FILE` serve HTTPS (reloaded on
//!   SIGHUP); HSTS is sent only then, or behind a TLS proxy (`LEADQ_BEHIND_TLS_PROXY=true`).

use std::fmt;
use std::path::PathBuf;

use crate::secret::Secret;

use super::Reader;

/// A PEM file read at start-up. `Debug` shows the path only (a key is a secret).
#[derive(Clone)]
pub struct Pem {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its contents.
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pem({})", self.path.display())
    }
}

/// TLS material for `rediss://` connections. Empty (the default) means: the system's roots,
/// no client certificate.
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    /// `LEADQ_REDIS_CA_FILE`: the CA bundle the server's certificate must chain to.
    pub ca: Option<Pem>,
    /// `LEADQ_REDIS_CLIENT_CERT_FILE` and `LEADQ_REDIS_CLIENT_KEY_FILE` (mutual TLS).
    pub client: Option<(Pem, Pem)>,
}

/// The API listener's certificate and key (PEM files, re-read on SIGHUP).
#[derive(Debug, Clone)]
pub struct ApiTls {
    /// `LEADQ_API_TLS_CERT_FILE`: the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// `LEADQ_API_TLS_KEY_FILE`: its private key.
    pub key_file: PathBuf,
}

/// The TLS settings that are not part of a store's connection.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// `LEADQ_REQUIRE_TLS`: plain store URLs were refused at load time.
    pub require: bool,
    /// HTTPS on the API listener, when configured.
    pub api: Option<ApiTls>,
    /// `LEADQ_BEHIND_TLS_PROXY`: a proxy terminates TLS in front of the API, so HSTS is sent
    /// although the listener itself speaks plain HTTP.
    pub behind_tls_proxy: bool,
}

impl TlsSettings {
    /// Whether clients reach the API over HTTPS (so the HSTS header is right to send).
    pub fn api_is_https(&self) -> bool {
        self.api.is_some() || self.behind_tls_proxy
    }
}

/// PostgreSQL `sslmode` values that encrypt (what `LEADQ_REQUIRE_TLS` accepts).
const PG_TLS_MODES: &[&str] = &["require", "verify-ca", "verify-full"];
const PG_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

fn flag(r: &mut Reader<'_>, name: &str) -> bool {
    match r.get(name).unwrap_or("false") {
        "true" | "1" => true,
        "false" | "0" => false,
        other => {
            r.problems
                .push(format!("{name}={other:?} is not true or false"));
            false
        }
    }
}

/// A path that must name a readable PEM file.
fn pem(r: &mut Reader<'_>, name: &str) -> Option<Pem> {
    let path = PathBuf::from(r.get(name)?);
    match std::fs::read(&path) {
        Ok(bytes) if bytes.windows(11).any(|w| w == b"-----BEGIN ") => Some(Pem { path, bytes }),
        Ok(_) => {
            r.problems.push(format!(
                "{name} ({}) holds no PEM block (-----BEGIN ...)",
                path.display()
            ));
            None
        }
        Err(e) => {
            r.problems
                .push(format!("{name} cannot be read ({}): {e}", path.display()));
            None
        }
    }
}

/// A certificate and key given together, or neither.
fn pair<T>(r: &mut Reader<'_>, cert: (&str, Option<T>), key: (&str, Option<T>)) -> Option<(T, T)> {
    if r.get(cert.0).is_some() != r.get(key.0).is_some() {
        r.problems.push(format!(
            "{} and {} must be set together (or neither)",
            cert.0, key.0
        ));
    }
    Some((cert.1?, key.1?))
}

/// Percent-encodes a query value (paths may hold spaces, `&`, `#`, `+`).
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What [`read`] returns.
pub(super) struct Tls {
    pub settings: TlsSettings,
    pub redis: RedisTls,
}

/// Reads the TLS variables, adds the `LEADQ_PG_*` files to `database_url`, and (with
/// `LEADQ_REQUIRE_TLS`) checks both store URLs encrypt.
pub(super) fn read(
    r: &mut Reader<'_>,
    database_url: &mut Option<Secret>,
    redis_url: Option<&Secret>,
) -> Tls {
    let require = flag(r, "LEADQ_REQUIRE_TLS");
    let behind_tls_proxy = flag(r, "LEADQ_BEHIND_TLS_PROXY");

    let ca = pem(r, "LEADQ_REDIS_CA_FILE");
    let cert = pem(r, "LEADQ_REDIS_CLIENT_CERT_FILE");
    let key = pem(r, "LEADQ_REDIS_CLIENT_KEY_FILE");
    let client = pair(
        r,
        ("LEADQ_REDIS_CLIENT_CERT_FILE", cert),
        ("LEADQ_REDIS_CLIENT_KEY_FILE", key),
    );
    let redis = RedisTls { ca, client };
    if let Some(url) = redis_url {
        let plain = url
            .expose()
            .split(',')
            .any(|u| u.trim().starts_with("redis://"));
        if plain && require {
            r.problems.push(
                "REDIS_URL is a plain redis:// URL but LEADQ_REQUIRE_TLS=true; use rediss://"
                    .into(),
            );
        }
        if plain && (redis.ca.is_some() || redis.client.is_some()) {
            r.problems.push(
                "LEADQ_REDIS_CA_FILE or LEADQ_REDIS_CLIENT_*_FILE is set but REDIS_URL is not \
                 rediss://"
                    .into(),
            );
        }
    }

    if let Some(url) = database_url.as_mut() {
        pg_url(r, url, require);
    }

    let api_cert = path(r, "LEADQ_API_TLS_CERT_FILE");
    let api_key = path(r, "LEADQ_API_TLS_KEY_FILE");
    let api = pair(
        r,
        ("LEADQ_API_TLS_CERT_FILE", api_cert),
        ("LEADQ_API_TLS_KEY_FILE", api_key),
    )
    .map(|(cert_file, key_file)| ApiTls {
        cert_file,
        key_file,
    });
    Tls {
        settings: TlsSettings {
            require,
            api,
            behind_tls_proxy,
        },
        redis,
    }
}

/// A path that must name a readable file.
fn path(r: &mut Reader<'_>, name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(r.get(name)?);
    match std::fs::File::open(&p) {
        Ok(_) => Some(p),
        Err(e) => {
            r.problems
                .push(format!("{name} cannot be read ({}): {e}", p.display()));
            None
        }
    }
}

/// Adds the `LEADQ_PG_*` files to the URL as `sslrootcert`, `sslcert`, `sslkey`; checks the
/// `sslmode`.
fn pg_url(r: &mut Reader<'_>, url: &mut Secret, require: bool) {
    let (base, query) = match url.expose().split_once('?') {
        Some((b, q)) => (b.to_owned(), q.to_owned()),
        None => (url.expose().to_owned(), String::new()),
    };
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect();
    let has = |params: &[(String, String)], k: &str| params.iter().any(|(n, _)| n == k);
    let mut added = false;
    for (var, param) in [
        ("LEADQ_PG_CA_FILE", "sslrootcert"),
        ("LEADQ_PG_CLIENT_CERT_FILE", "sslcert"),
        ("LEADQ_PG_CLIENT_KEY_FILE", "sslkey"),
    ] {
        let Some(p) = path(r, var) else { continue };
        if has(&params, param) {
            r.problems.push(format!(
                "{var} and DATABASE_URL's {param} parameter are both set; set only one"
            ));
            continue;
        }
        params.push((param.to_owned(), encode(&p.to_string_lossy())));
        added = true;
    }
    if r.get("LEADQ_PG_CLIENT_CERT_FILE").is_some() != r.get("LEADQ_PG_CLIENT_KEY_FILE").is_some() {
        r.problems.push(
            "LEADQ_PG_CLIENT_CERT_FILE and LEADQ_PG_CLIENT_KEY_FILE must be set together (or \
             neither)"
                .into(),
        );
    }
    let mode = params
        .iter()
        .find(|(k, _)| k == "sslmode")
        .map(|(_, v)| v.clone());
    match mode.as_deref() {
        None if added => params.push(("sslmode".into(), "verify-full".into())),
        Some(m) if !PG_MODES.contains(&m) => r.problems.push(format!(
            "DATABASE_URL's sslmode={m:?} is not one of {}",
            PG_MODES.join(", ")
        )),
        _ => {}
    }
    let effective = params
        .iter()
        .find(|(k, _)| k == "sslmode")
        .map(|(_, v)| v.as_str())
        .unwrap_or("prefer");
    if require && !PG_TLS_MODES.contains(&effective) {
        r.problems.push(format!(
            "DATABASE_URL has sslmode={effective} but LEADQ_REQUIRE_TLS=true; add \
             ?sslmode=verify-full (or require, verify-ca)"
        ));
    }
    if added {
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        *url = Secret::new(format!("{base}?{}", query.join("&")));
    }
}

#[cfg(test)]
mod tests {
    use super::super::{KindDefaults, Needs, Settings};
    use std::collections::BTreeMap;

    const ALL: Needs = Needs {
        database: true,
        redis: true,
        keys: false,
    };
    const KINDS: &[KindDefaults] = &[];

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        let vars: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load(&vars, ALL, KINDS).map_err(|e| e.to_string())
    }

    fn pem_file(name: &str) -> String {
        let dir = std::env::temp_dir().join(format!("leadq-tls-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(
            &p,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        p.to_string_lossy().into_owned()
    }

    #[test]
    fn require_tls_refuses_plain_urls_naming_the_setting_with_every_other_problem() {
        let err = load(&[
            ("DATABASE_URL", "postgres://u:pw-secret@db/leadq"),
            ("REDIS_URL", "redis://:pw-secret@cache:6379/"),
            ("LEADQ_REQUIRE_TLS", "true"),
            ("LEADQ_API_TLS_CERT_FILE", "/nonexistent/cert.pem"),
            ("LEADQ_LOG_FORMAT", "xml"),
        ])
        .unwrap_err();
        for needle in [
            "REDIS_URL is a plain redis:// URL but LEADQ_REQUIRE_TLS=true",
            "DATABASE_URL has sslmode=prefer but LEADQ_REQUIRE_TLS=true",
            "LEADQ_API_TLS_CERT_FILE cannot be read",
            "LEADQ_API_TLS_CERT_FILE and LEADQ_API_TLS_KEY_FILE must be set together",
            "LEADQ_LOG_FORMAT",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
        assert!(!err.contains("pw-secret"), "{err}");
    }

    #[test]
    fn pg_files_become_url_parameters_and_default_to_verify_full() {
        let ca = pem_file("ca with space.pem");
        let s = load(&[
            ("DATABASE_URL", "postgres://u:p@db/leadq?application_name=x"),
            ("REDIS_URL", "rediss://cache:6380/"),
            ("LEADQ_PG_CA_FILE", &ca),
            ("LEADQ_REDIS_CA_FILE", &ca),
            ("LEADQ_REQUIRE_TLS", "true"),
        ])
        .unwrap();
        let url = s.database_url().expose().to_owned();
        assert!(url.starts_with("postgres://u:p@db/leadq?application_name=x&sslrootcert=/"));
        assert!(url.contains("ca%20with%20space.pem"), "{url}");
        assert!(url.ends_with("&sslmode=verify-full"), "{url}");
        assert!(s.queue.redis_tls.ca.is_some());
        assert!(s.tls.require && !s.tls.api_is_https());
    }

    #[test]
    fn a_file_and_the_same_url_parameter_are_refused_together() {
        let ca = pem_file("ca.pem");
        let err = load(&[
            (
                "DATABASE_URL",
                "postgres://u:p@db/leadq?sslmode=verify-ca&sslrootcert=/x.pem",
            ),
            ("REDIS_URL", "redis://cache/"),
            ("LEADQ_PG_CA_FILE", &ca),
            ("LEADQ_PG_CLIENT_CERT_FILE", &ca),
            ("LEADQ_REDIS_CA_FILE", &ca),
        ])
        .unwrap_err();
        for needle in [
            "LEADQ_PG_CA_FILE and DATABASE_URL's sslrootcert parameter are both set",
            "LEADQ_PG_CLIENT_CERT_FILE and LEADQ_PG_CLIENT_KEY_FILE must be set together",
            "LEADQ_REDIS_CA_FILE or LEADQ_REDIS_CLIENT_*_FILE is set but REDIS_URL is not rediss://",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
    }
}
