//! A throwaway PKI (rcgen) and private TLS-only servers: `redis-server --port 0 --tls-port`
//! and a PostgreSQL with `ssl = on` whose `pg_hba.conf` has only `hostssl` lines (a plain
//! connection has no entry, so it is refused). Both ask for a client certificate signed by the
//! test CA (mutual TLS). Started once and shared by the tests that run at the same time; the
//! last one to finish stops them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The role's password: distinctive, so a test can check no message leaks it.
pub(crate) const PG_PASSWORD: &str = "tls-pw-5c1e9b";

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub(crate) struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA and the certificates it issued, in a folder of their own.
pub(crate) struct Pki {
    pub dir: PathBuf,
    /// The CA the servers' certificates chain to.
    pub ca: PathBuf,
    /// A CA that signed nothing here.
    pub wrong_ca: PathBuf,
    /// 127.0.0.1 and localhost.
    pub server: Pair,
    /// The same names, expired in 2021.
    pub expired: Pair,
    /// Valid for `elsewhere.example` only.
    pub wrong_host: Pair,
    /// leadq's client certificate (CN leadq).
    pub client: Pair,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(dir: &Path, name: &str) -> (PathBuf, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, cert.pem()).unwrap();
    (path, Issuer::new(p, key))
}

impl Pki {
    pub(crate) fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("leadq-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_path, issuer) = ca(&dir, "test-ca");
        let (wrong_ca, _) = ca(&dir, "wrong-ca");
        let mut pki = Self {
            ca: ca_path,
            wrong_ca,
            server: Pair {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            expired: Pair {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            wrong_host: Pair {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            client: Pair {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            issuer,
            dir,
        };
        pki.server = pki.issue("server", &["127.0.0.1", "localhost"], false);
        pki.expired = pki.issue("expired", &["127.0.0.1", "localhost"], true);
        pki.wrong_host = pki.issue("wrong-host", &["elsewhere.example"], false);
        pki.client = pki.issue("leadq", &["leadq"], false);
        pki
    }

    /// A leaf certificate for `names`, signed by the test CA, usable by servers and clients.
    pub(crate) fn issue(&self, name: &str, names: &[&str], expired: bool) -> Pair {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let pair = Pair {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&pair.cert, cert.pem()).unwrap();
        std::fs::write(pair.cert.with_extension("der"), cert.der()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        pair
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, what: &str) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start on port {port}");
}

fn on_path(tool: &str) -> Option<PathBuf> {
    #[allow(clippy::disallowed_methods)]
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A TLS-only redis-server on a port of its own.
pub(crate) struct TlsRedis {
    pub port: u16,
    child: Child,
}

impl TlsRedis {
    /// Serves `pair`; asks clients for a certificate signed by `ca` when `auth_clients`.
    pub(crate) fn start(dir: &Path, pair: &Pair, ca: &Path, auth_clients: bool) -> Self {
        Self::start_with(dir, pair, ca, auth_clients, 0)
    }

    /// Like [`TlsRedis::start`], also serving plain text on `plain_port` unless it is 0 (the
    /// bench compares both on one server).
    pub(crate) fn start_with(
        dir: &Path,
        pair: &Pair,
        ca: &Path,
        auth_clients: bool,
        plain_port: u16,
    ) -> Self {
        let port = free_port();
        let child = Command::new(on_path("redis-server").expect("redis-server"))
            .args([
                "--port",
                &plain_port.to_string(),
                "--tls-port",
                &port.to_string(),
            ])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--tls-cert-file")
            .arg(&pair.cert)
            .arg("--tls-key-file")
            .arg(&pair.key)
            .arg("--tls-ca-cert-file")
            .arg(ca)
            .args([
                "--tls-auth-clients",
                if auth_clients { "yes" } else { "no" },
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let r = Self { port, child };
        wait_port(port, "redis-server --tls-port");
        r
    }

    pub(crate) fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The newest PostgreSQL server tools: Debian's /usr/lib/postgresql/<major>/bin, else PATH.
fn pg_bindir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop()
        .map(|(_, b)| b)
        .or_else(|| on_path("initdb").and_then(|p| p.parent().map(Path::to_owned)))
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run a command");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A TLS-only PostgreSQL of its own (initdb'd for this run, removed at the end). As root, it
/// runs as the `postgres` OS user (initdb refuses root), like scripts/lib/services.sh.
pub(crate) struct TlsPostgres {
    pub port: u16,
    dir: PathBuf,
    bindir: PathBuf,
    as_postgres: bool,
}

impl TlsPostgres {
    fn tool(&self, name: &str) -> Command {
        let path = self.bindir.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.current_dir("/");
        cmd
    }

    fn run(&self, cmd: &mut Command, what: &str) {
        let out = cmd.output().expect(what);
        assert!(
            out.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn start(pki: &Pki) -> Self {
        Self::start_with(pki, false)
    }

    /// Like [`TlsPostgres::start`]; `plain_too` also accepts plain connections (the bench
    /// compares both on one server).
    pub(crate) fn start_with(pki: &Pki, plain_too: bool) -> Self {
        let bindir = pg_bindir().expect("PostgreSQL server tools");
        let as_postgres = output(Command::new("id").arg("-u")) == "0";
        let dir = std::env::temp_dir().join(format!(
            "leadq-tlspg-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let owner = if as_postgres {
            let uid: u32 = output(Command::new("id").args(["-u", "postgres"]))
                .parse()
                .unwrap();
            let gid: u32 = output(Command::new("id").args(["-g", "postgres"]))
                .parse()
                .unwrap();
            Some((uid, gid))
        } else {
            None
        };
        let give = |p: &Path| {
            if let Some((u, g)) = owner {
                std::os::unix::fs::chown(p, Some(u), Some(g)).unwrap();
            }
        };
        give(&dir);
        let pg = Self {
            port: free_port(),
            dir,
            bindir,
            as_postgres,
        };
        let data = pg.dir.join("data");
        pg.run(
            pg.tool("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-E", "UTF8", "--no-locale", "-N"])
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"]),
            "initdb",
        );
        use std::os::unix::fs::PermissionsExt as _;
        for (from, to) in [
            (&pki.server.cert, "server.pem"),
            (&pki.server.key, "server.key"),
            (&pki.ca, "ca.pem"),
        ] {
            let dest = data.join(to);
            std::fs::copy(from, &dest).unwrap();
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
            give(&dest);
        }
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n\
             ssl_ca_file = 'ca.pem'\nfsync = off\nsynchronous_commit = off\n",
            pg.port,
            pg.dir.display()
        );
        let mut main = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        main.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), main).unwrap();
        // TCP only with TLS and a client certificate of the test CA; no `host` line, so a
        // plain connection finds no entry and is refused.
        let mut hba = "local all all trust\n\
                       hostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-ca\n"
            .to_owned();
        if plain_too {
            hba.push_str("hostnossl all all 127.0.0.1/32 scram-sha-256\n");
        }
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        pg.run(
            pg.tool("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(pg.dir.join("postgres.log"))
                .args(["-w", "-t", "60", "-s", "start"]),
            "pg_ctl start",
        );
        pg.run(
            pg.tool("psql")
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
                .arg(&pg.dir)
                .args([
                    "-p",
                    &pg.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                ])
                .args([
                    "-c",
                    &format!(
                        "CREATE ROLE leadq LOGIN PASSWORD '{PG_PASSWORD}' NOSUPERUSER \
                         NOBYPASSRLS CREATEDB"
                    ),
                    "-c",
                    // The migration owner every test database is created and migrated by.
                    &format!(
                        "CREATE ROLE {} LOGIN PASSWORD '{}' NOSUPERUSER NOBYPASSRLS CREATEDB",
                        leadq_testkit::OWNER_ROLE.0,
                        leadq_testkit::OWNER_ROLE.1
                    ),
                    "-c",
                    "CREATE DATABASE leadq OWNER leadq",
                ]),
            "create the leadq roles",
        );
        pg
    }

    /// The URL without TLS parameters.
    pub(crate) fn bare_url(&self) -> String {
        format!(
            "postgres://leadq:{PG_PASSWORD}@127.0.0.1:{}/leadq",
            self.port
        )
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-t", "30", "-s", "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One TLS-only Redis and PostgreSQL, with the PKI they use.
pub(crate) struct Servers {
    pub redis: TlsRedis,
    pub pg: TlsPostgres,
    pub pki: Pki,
}

impl Servers {
    /// The running pair, started if no test holds it; `None` (with a message) only when the
    /// server binaries are not installed at all.
    pub(crate) fn shared() -> Option<Arc<Self>> {
        static SHARED: Mutex<Weak<Servers>> = Mutex::new(Weak::new());
        if on_path("redis-server").is_none() || pg_bindir().is_none() {
            eprintln!("skipping: redis-server or the PostgreSQL server tools are not installed");
            return None;
        }
        let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slot.upgrade() {
            return Some(s);
        }
        let pki = Pki::new();
        let redis = TlsRedis::start(&pki.dir, &pki.server, &pki.ca, true);
        let pg = TlsPostgres::start(&pki);
        let s = Arc::new(Self { redis, pg, pki });
        *slot = Arc::downgrade(&s);
        Some(s)
    }

    /// `REDIS_URL` and the `LEADQ_REDIS_*` files, with the test CA and client certificate.
    pub(crate) fn redis_env(&self) -> Vec<(&'static str, String)> {
        let p = &self.pki;
        vec![
            ("REDIS_URL", self.redis.url()),
            ("LEADQ_REDIS_CA_FILE", p.ca.display().to_string()),
            (
                "LEADQ_REDIS_CLIENT_CERT_FILE",
                p.client.cert.display().to_string(),
            ),
            (
                "LEADQ_REDIS_CLIENT_KEY_FILE",
                p.client.key.display().to_string(),
            ),
        ]
    }

    /// The PostgreSQL URL with every TLS setting as URL parameters, trusting `ca`.
    pub(crate) fn pg_url(&self, ca: &Path) -> String {
        let c = &self.pki.client;
        format!(
            "{}?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
            self.pg.bare_url(),
            ca.display(),
            c.cert.display(),
            c.key.display()
        )
    }
}
