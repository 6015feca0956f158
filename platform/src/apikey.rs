//! API keys: generation, hashing and constant-time verification.
//!
//! A key reads `lq_<prefix>_<secret>`: the 12-hex-digit prefix finds the row, the 64-hex-digit
//! secret carries 256 random bits. The database stores only SHA-256 of the whole key, compared
//! in constant time. An unknown prefix is hashed and compared too, against a fixed dummy, so
//! unknown and wrong keys cost the same and answer the same.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// Scopes a key may carry.
pub mod scope {
    /// Create and update leads.
    pub const LEADS_WRITE: &str = "leads:write";
    /// Read leads.
    pub const LEADS_READ: &str = "leads:read";
    /// Read queue and worker status.
    pub const STATUS_READ: &str = "status:read";
    /// Tenant administration: its audit trail, its keys.
    pub const ADMIN: &str = "admin";
    /// The scopes of a tenant's first key (its owner's key).
    pub const DEFAULT: &[&str] = &[LEADS_WRITE, LEADS_READ, STATUS_READ, ADMIN];
}

/// A freshly generated key: the clear text (shown once) and what is stored.
#[derive(Debug)]
pub struct NewKey {
    /// The whole key, to be shown to its owner exactly once.
    pub clear: Secret,
    /// The lookup prefix.
    pub prefix: String,
    /// SHA-256 of the whole key.
    pub hash: Vec<u8>,
}

/// Generates a new random key.
pub fn generate() -> NewKey {
    let mut rng = rand::rng();
    let mut prefix = [0u8; 6];
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut prefix);
    rng.fill_bytes(&mut secret);
    let prefix = hex::encode(prefix);
    let clear = format!("lq_{prefix}_{}", hex::encode(secret));
    let hash = hash(&clear);
    NewKey {
        clear: Secret::new(clear),
        prefix,
        hash,
    }
}

/// SHA-256 of a whole key.
pub fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Extracts the lookup prefix of a presented key, or `None` when it is not shaped like a key.
pub fn prefix_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("lq_")?;
    let (prefix, secret) = rest.split_once('_')?;
    let hexdigits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexdigits(prefix, 12) && hexdigits(secret, 64)).then_some(prefix)
}

/// Compares a presented key with a stored hash in constant time. With `stored = None`
/// (unknown prefix) it does the same work against a dummy and returns false.
pub fn verify(presented: &str, stored: Option<&[u8]>) -> bool {
    const DUMMY: [u8; 32] = [0u8; 32];
    let computed = hash(presented);
    let (target, known) = match stored {
        Some(h) => (h, true),
        None => (&DUMMY[..], false),
    };
    bool::from(computed.ct_eq(target)) && known
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_verifies_and_a_changed_one_does_not() {
        let k = generate();
        assert_eq!(prefix_of(k.clear.expose()), Some(k.prefix.as_str()));
        assert!(verify(k.clear.expose(), Some(&k.hash)));
        let mut wrong = k.clear.expose().to_owned();
        wrong.pop();
        wrong.push('x');
        assert!(!verify(&wrong, Some(&k.hash)));
        assert!(!verify(k.clear.expose(), None));
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        for bad in ["", "lq_", "lq_abc_def", "Bearer x", "lq_0123456789ab_zz"] {
            assert_eq!(prefix_of(bad), None, "{bad}");
        }
    }
}
