//! The keyed blind index over sealed emails and phones, and the tokens of exports.
//!
//! A sealed value cannot be searched (every seal has a fresh nonce), so each sealed email and
//! phone is stored next to `HMAC-SHA256(index key, tenant ‖ field ‖ normalized value)`,
//! truncated to 128 bits: equal values of one tenant match, nothing about the value shows, and
//! the same address in two tenants gives two unrelated indexes (no linking across tenants).
//! The index key (`LEADQ_PII_INDEX_KEYS`) is not the data key, so a leaked index column
//! alone opens nothing, and guessing needs the key.
//!
//! Stored form: `<kid>:<32 hex>`. The first key of the keyring indexes; a lookup asks for
//! the value under every key, so finding keeps working while a new index key is rolled out
//! and `leadq pii reseal` re-indexes the rows in the background ([`super::at_rest`]).
//!
//! Export tokens ([`Sealer::token`]) are the same construction under their own label:
//! stable per tenant for one index key, so an analyst can count and join by person without
//! seeing one; they change when the index key is rotated.

use hmac::{Hmac, Mac};
use leadq_platform::keyring::NamedKey;
use sha2::Sha256;
use uuid::Uuid;

use super::{field, Sealer};

/// The form a value is indexed in: an email trimmed and lower-cased; a phone reduced to its
/// digits, keeping a leading `+` (`+44 20 7946 0000` and `+442079460000` are one number).
/// `None` when nothing is left to index.
pub fn normalize(field_name: &str, value: &str) -> Option<String> {
    let v = value.trim();
    let out = match field_name {
        field::EMAIL => v.to_lowercase(),
        field::PHONE => {
            let digits: String = v.chars().filter(char::is_ascii_digit).collect();
            if v.starts_with('+') {
                format!("+{digits}")
            } else {
                digits
            }
        }
        _ => v.to_owned(),
    };
    (!out.trim_start_matches('+').is_empty()).then_some(out)
}

fn mac(key: &NamedKey, label: &str, tenant: Uuid, field_name: &str, normalized: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(&key.key).expect("HMAC takes any key length");
    m.update(format!("leadq:{label}:v1:{tenant}:{field_name}:").as_bytes());
    m.update(normalized.as_bytes());
    hex::encode(&m.finalize().into_bytes()[..16])
}

impl Sealer {
    /// The blind index of `value` in `tenant`'s `field`, under the current index key (what is
    /// stored). `None` for a value with nothing to index.
    pub fn blind_index(&self, tenant: Uuid, field_name: &str, value: &str) -> Option<String> {
        let n = normalize(field_name, value)?;
        let key = self.index.current();
        Some(format!(
            "{}:{}",
            key.kid,
            mac(key, "bidx", tenant, field_name, &n)
        ))
    }

    /// What a phone or email with nothing to index (a phone without a digit, from before
    /// validation or from a Chatwoot contact) is indexed as: under the current key, so the row
    /// counts as indexed, and matching no lookup (a lookup's index is a MAC, never `-`). Left
    /// NULL, every re-seal pass took such a row for one still to index: it was rewritten on
    /// each pass and counted as left, so no pass completed and the old keys could never go.
    pub fn index_or_nothing(&self, tenant: Uuid, field_name: &str, value: &str) -> String {
        self.blind_index(tenant, field_name, value)
            .unwrap_or_else(|| format!("{}:-", self.index.current().kid))
    }

    /// The blind index of `value` under every index key: what a lookup matches against, so
    /// rows not yet re-indexed after a rotation are still found.
    pub fn blind_indexes(&self, tenant: Uuid, field_name: &str, value: &str) -> Vec<String> {
        let Some(n) = normalize(field_name, value) else {
            return Vec::new();
        };
        self.index
            .kids()
            .filter_map(|kid| self.index.get(kid))
            .map(|key| format!("{}:{}", key.kid, mac(key, "bidx", tenant, field_name, &n)))
            .collect()
    }

    /// The id of the index key new indexes are made under.
    pub fn current_index_kid(&self) -> &str {
        &self.index.current().kid
    }

    /// A stable per-tenant token standing for `value` in an export (`tok_` and 24 hex
    /// characters). Values that normalize alike get one token.
    pub fn token(&self, tenant: Uuid, field_name: &str, value: &str) -> String {
        let n = normalize(field_name, value).unwrap_or_default();
        let mut t = mac(self.index.current(), "token", tenant, field_name, &n);
        t.truncate(24);
        format!("tok_{t}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leadq_platform::keyring::Keyring;

    #[test]
    fn equal_values_of_one_tenant_match_and_nothing_else_does() {
        let s = Sealer::new(Keyring::random("d1"), Keyring::random("i1"));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let ix = s.blind_index(a, field::EMAIL, "Ada@Example.com ").unwrap();
        assert!(ix.starts_with("i1:") && ix.len() == 3 + 32, "{ix}");
        assert_eq!(
            Some(&ix),
            s.blind_index(a, field::EMAIL, "ada@example.com").as_ref()
        );
        assert_ne!(
            Some(&ix),
            s.blind_index(b, field::EMAIL, "ada@example.com").as_ref()
        );
        assert_ne!(
            Some(&ix),
            s.blind_index(a, field::PHONE, "ada@example.com").as_ref()
        );
        assert_ne!(
            Some(&ix),
            s.blind_index(a, field::EMAIL, "eve@example.com").as_ref()
        );
        // Nothing of the address shows: after the key id, only the MAC's 32 hex digits. (The
        // check was `!contains("ada")`, which a hex MAC holds by chance in about 0.7 % of runs:
        // `a` and `d` are hex digits.)
        assert!(ix[3..].bytes().all(|b| b.is_ascii_hexdigit()), "{ix}");
        assert!(!ix.contains('@') && !ix.contains("example"), "{ix}");
        assert_eq!(
            s.blind_index(a, field::PHONE, "+44 20 7946 0000"),
            s.blind_index(a, field::PHONE, "+442079460000")
        );
        assert_ne!(
            s.blind_index(a, field::PHONE, "+442079460000"),
            s.blind_index(a, field::PHONE, "442079460000")
        );
        assert_eq!(s.blind_index(a, field::PHONE, " + "), None);
    }

    #[test]
    fn a_lookup_finds_values_indexed_under_an_older_key() {
        let old = Sealer::new(Keyring::random("d1"), Keyring::random("i1"));
        let t = Uuid::new_v4();
        let stored = old.blind_index(t, field::EMAIL, "ada@example.com").unwrap();
        // Rotation: a new index key in front, the old one kept.
        let spec = format!(
            "{},{}",
            Keyring::random("i2").to_spec().expose(),
            old.index.to_spec().expose()
        );
        let rotated = Sealer::new(
            Keyring::random("d1"),
            Keyring::parse(&leadq_platform::secret::Secret::new(spec)).unwrap(),
        );
        let all = rotated.blind_indexes(t, field::EMAIL, "ADA@example.com");
        assert_eq!(all.len(), 2);
        assert!(all.contains(&stored));
        assert!(rotated
            .blind_index(t, field::EMAIL, "ada@example.com")
            .unwrap()
            .starts_with("i2:"));
    }

    #[test]
    fn export_tokens_are_stable_per_tenant_and_reveal_nothing() {
        let s = Sealer::new(Keyring::random("d1"), Keyring::random("i1"));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let t = s.token(a, field::EMAIL, "ada@example.com");
        assert!(t.starts_with("tok_") && t.len() == 28, "{t}");
        assert_eq!(t, s.token(a, field::EMAIL, " ADA@example.com"));
        assert_ne!(t, s.token(b, field::EMAIL, "ada@example.com"));
        assert_ne!(
            t[4..],
            s.blind_index(a, field::EMAIL, "ada@example.com").unwrap()[3..27]
        );
    }
}
