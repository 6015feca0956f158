//! Keyrings: named 256-bit keys with rotation, for signing envelopes and encrypting data.
//!
//! A keyring is configured as `kid:base64,kid:base64,…` (each key exactly 32 bytes). The
//! first key is the *current* one (it signs or encrypts); every key verifies or decrypts, so
//! rotation is: prepend a new key everywhere, wait until nothing signed with the old one is
//! left in flight, then drop it.

use base64::Engine;

use crate::secret::Secret;

/// One named key.
#[derive(Clone)]
pub struct NamedKey {
    /// Key id, written next to what the key signed or encrypted.
    pub kid: String,
    /// The key bytes.
    pub key: [u8; 32],
}

impl std::fmt::Debug for NamedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NamedKey({}, [redacted])", self.kid)
    }
}

/// A parsed keyring: at least one key, the first current. Shared, not copied, by its clones
/// (every request's state holds a few).
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: std::sync::Arc<[NamedKey]>,
}

impl Keyring {
    /// Parses `kid:base64,…`. The error names the problem but never echoes key material.
    pub fn parse(spec: &Secret) -> Result<Self, String> {
        let mut keys: Vec<NamedKey> = Vec::new();
        for (i, part) in spec
            .expose()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let Some((kid, b64)) = part.split_once(':') else {
                return Err(format!("entry {} is not kid:base64", i + 1));
            };
            let kid = kid.trim();
            if kid.is_empty()
                || kid.len() > 32
                || !kid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "entry {}: key id must be 1-32 of a-z, A-Z, 0-9, '-', '_'",
                    i + 1
                ));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| format!("entry {} ({kid}): key is not valid base64", i + 1))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| format!("entry {} ({kid}): key must be exactly 32 bytes", i + 1))?;
            if keys.iter().any(|k| k.kid == kid) {
                return Err(format!("key id {kid} appears twice"));
            }
            keys.push(NamedKey {
                kid: kid.to_owned(),
                key,
            });
        }
        if keys.is_empty() {
            return Err("no keys".into());
        }
        Ok(Self { keys: keys.into() })
    }

    /// A keyring of one given key.
    pub fn single(kid: &str, key: [u8; 32]) -> Self {
        Self {
            keys: [NamedKey {
                kid: kid.to_owned(),
                key,
            }]
            .into(),
        }
    }

    /// A keyring of one fresh random key (tests).
    pub fn random(kid: &str) -> Self {
        Self {
            keys: [NamedKey {
                kid: kid.to_owned(),
                key: rand::random(),
            }]
            .into(),
        }
    }

    /// The keyring as configuration text (tests hand it to a child process).
    pub fn to_spec(&self) -> Secret {
        let parts: Vec<String> = self
            .keys
            .iter()
            .map(|k| {
                format!(
                    "{}:{}",
                    k.kid,
                    base64::engine::general_purpose::STANDARD.encode(k.key)
                )
            })
            .collect();
        Secret::new(parts.join(","))
    }

    /// The current key.
    pub fn current(&self) -> &NamedKey {
        &self.keys[0]
    }

    /// The key named `kid`.
    pub fn get(&self, kid: &str) -> Option<&NamedKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// Every key id, the current one first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyring_round_trips_and_the_first_key_is_current() {
        let a = Keyring::random("k2");
        let spec = format!(
            "{},k1:{}",
            a.to_spec().expose(),
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        );
        let k = Keyring::parse(&Secret::new(spec)).unwrap();
        assert_eq!(k.current().kid, "k2");
        assert_eq!(k.get("k1").unwrap().key, [7u8; 32]);
        assert!(!format!("{k:?}").contains("AAAA"));
    }

    #[test]
    fn bad_keyrings_are_refused_without_echoing_keys() {
        for (spec, needle) in [
            ("", "no keys"),
            ("nokid", "not kid:base64"),
            ("k1:!!!", "not valid base64"),
            ("k1:AAAA", "exactly 32 bytes"),
        ] {
            let e = Keyring::parse(&Secret::new(spec)).unwrap_err();
            assert!(e.contains(needle), "{spec}: {e}");
            assert!(!e.contains("AAAA"));
        }
    }
}
