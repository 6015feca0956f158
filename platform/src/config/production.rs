//! What a production deployment may not run with: the development secrets this repository
//! publishes (the compose file's signing and data keys, the sample operator token of
//! `.env.example`) and the default database passwords. With `LEADQ_ENVIRONMENT=production`
//! each one found is a configuration problem naming the setting, reported with every other
//! problem at start-up.
//!
//! The published values are known here only by their SHA-256, so this file is not one more
//! copy of them to keep in step; `every_published_secret_is_recognised` (below) reads
//! `docker-compose.yml` and `.env.example` and fails if a published value changes without its
//! fingerprint.

use sha2::{Digest, Sha256};

use crate::keyring::Keyring;
use crate::secret::Secret;

/// SHA-256 of the key bytes of the development keys in `docker-compose.yml`.
const DEV_KEYS: [&str; 4] = [
    // LEADQ_SIGNING_KEYS compose-dev
    "dc5cc39e153a2ce7f5e57eff3d98495c9087f995265c496dc5f668afd2ece1d1",
    // LEADQ_DATA_KEYS compose-dev
    "7db796cb97c6fab0d18f7b1d8b84a796928cbb93e8cf01071423a566df78c186",
    // LEADQ_AUDIT_KEYS compose-dev
    "7ab9c2e06359cc6e6ae5d48bdb3735a10968af1831265a32941ee5253de3cd46",
    // LEADQ_PII_INDEX_KEYS compose-dev
    "59274f7c8a31bec3ba506467b92bd88313610d0af697524245e629f50b860bdb",
];

/// SHA-256 of the database passwords the compose file, `scripts/dev` and the docs use
/// (`leadq`, `leadq_owner`, `postgres`).
const DEFAULT_PASSWORDS: [&str; 3] = [
    "9ecd25b98d6ef8520c9c6e7d1f29cdf20bda65e65bf85dc68de4dffca4ef591d",
    "eb38812149be80502d1261a008466effbc6578ced00ab6d90de5a87d51b4b78c",
    "a942b37ccfaf5a813b1432caa209a43b9d144e47ad0de1549c289c253e556cd5",
];

/// SHA-256 of the sample operator token of `.env.example`.
const SAMPLE_TOKENS: [&str; 1] =
    ["31ff05e50949cb37d571e629192face1aea52ea7702ed5d7e60607837a9df4b2"];

fn fingerprint(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn published(list: &[&str], bytes: &[u8]) -> bool {
    let f = fingerprint(bytes);
    list.iter().any(|p| *p == f)
}

/// The password of a `postgres://user:password@host/…` URL, if it has one.
fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    userinfo.split_once(':').map(|(_, p)| p)
}

/// What a production deployment holds of the published development secrets: one problem per
/// setting, naming it (never the value).
pub(super) fn problems(
    keyrings: &[(&str, Option<&Keyring>)],
    operator_tokens: &[(String, Secret)],
    database_urls: &[(&str, Option<&Secret>)],
) -> Vec<String> {
    let mut out = Vec::new();
    for (name, ring) in keyrings {
        let Some(ring) = ring else { continue };
        let dev: Vec<&str> = ring
            .kids()
            .filter(|kid| ring.get(kid).is_some_and(|k| published(&DEV_KEYS, &k.key)))
            .collect();
        if !dev.is_empty() {
            out.push(format!(
                "{name} holds the published development key(s) {} while LEADQ_ENVIRONMENT=production; \
                 generate new keys (head -c 32 /dev/urandom | base64)",
                dev.join(", ")
            ));
        }
    }
    for (op, token) in operator_tokens {
        if published(&SAMPLE_TOKENS, token.expose().as_bytes()) {
            out.push(format!(
                "LEADQ_OPERATOR_TOKENS: the token of {op} is the published sample token while \
                 LEADQ_ENVIRONMENT=production"
            ));
        }
    }
    for (name, url) in database_urls {
        let Some(url) = url else { continue };
        if url_password(url.expose()).is_some_and(|p| published(&DEFAULT_PASSWORDS, p.as_bytes())) {
            out.push(format!(
                "{name} uses a default database password while LEADQ_ENVIRONMENT=production; \
                 set a strong password on the role"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn read(path: &str) -> String {
        std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn every_published_secret_is_recognised() {
        let compose = read("docker-compose.yml");
        let mut keys = 0;
        for line in compose.lines() {
            let Some(spec) = line.split(":-compose-dev:").nth(1) else {
                continue;
            };
            let b64 = spec.trim_end_matches('}');
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            assert!(published(&DEV_KEYS, &bytes), "{line}: fingerprint missing");
            keys += 1;
        }
        assert_eq!(keys, 4, "the compose file's four development keys");
        for line in compose.lines().filter(|l| l.contains("postgres://")) {
            let url = line.split_whitespace().last().unwrap();
            let p = url_password(url).unwrap();
            assert!(published(&DEFAULT_PASSWORDS, p.as_bytes()), "{line}");
        }
        let example = read(".env.example");
        let token = example
            .lines()
            .find_map(|l| l.strip_prefix("# LEADQ_OPERATOR_TOKENS=oncall:"))
            .unwrap();
        assert!(published(&SAMPLE_TOKENS, token.as_bytes()));
    }

    #[test]
    fn each_published_secret_is_named_by_its_setting() {
        let dev = Keyring::single("compose-dev", *b"leadq-compose-development-key-32");
        let fresh = Keyring::random("k1");
        let url = Secret::new("postgres://leadq:leadq@db:5432/leadq");
        let strong = Secret::new("postgres://leadq:Xk3-very-long-pw@db:5432/leadq");
        let tokens = vec![(
            "oncall".to_owned(),
            Secret::new("REPLACE_WITH_A_LONG_RANDOM_TOKEN"),
        )];
        let found = problems(
            &[
                ("LEADQ_SIGNING_KEYS", Some(&dev)),
                ("LEADQ_DATA_KEYS", Some(&fresh)),
            ],
            &tokens,
            &[
                ("DATABASE_URL", Some(&url)),
                ("LEADQ_MIGRATION_DATABASE_URL", Some(&strong)),
            ],
        );
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].starts_with("LEADQ_SIGNING_KEYS holds") && found[0].contains("compose-dev")
        );
        assert!(found[1].contains("oncall"));
        assert!(found[2].starts_with("DATABASE_URL uses a default"));
        assert!(
            found.iter().all(|p| !p.contains("leadq:leadq")),
            "no value is echoed"
        );
    }

    #[test]
    fn production_refuses_the_published_development_secrets_and_nothing_else() {
        let dev_key = "compose-dev:bGVhZHEtY29tcG9zZS1kZXZlbG9wbWVudC1rZXktMzI=";
        let fresh_key = Keyring::random("k1").to_spec();
        let with = |env: &str, key: &str, url: &str| {
            crate::config::Settings::load(
                &[
                    ("LEADQ_ENVIRONMENT", env),
                    ("DATABASE_URL", url),
                    ("REDIS_URL", "redis://r:6379/"),
                    ("LEADQ_SIGNING_KEYS", key),
                    ("LEADQ_DATA_KEYS", fresh_key.expose()),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                crate::config::Needs {
                    database: true,
                    redis: true,
                    keys: false,
                },
                &[],
            )
        };
        let default_pw = "postgres://leadq:leadq@db:5432/leadq";
        let strong_pw = "postgres://leadq:n0t-the-default-9f3@db:5432/leadq";
        let err = with("production", dev_key, default_pw).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(err.problems[0].starts_with("LEADQ_SIGNING_KEYS holds the published"));
        assert!(err.problems[1].starts_with("DATABASE_URL uses a default database password"));
        assert!(!err.to_string().contains("bGVhZHEt"), "key material echoed");
        // Development runs with them; production runs with fresh ones.
        assert!(with("development", dev_key, default_pw).is_ok());
        assert!(with("production", fresh_key.expose(), strong_pw).is_ok());
    }
}
