//! The keyrings: signing (envelopes), data (personal data sealed in Redis and PostgreSQL),
//! audit (the HMAC links of the audit chain) and PII index (the keyed blind index that finds a
//! sealed email or phone, and the tokens of exports). One format for all four,
//! `kid:base64-of-32-bytes,…`, the first being current (what new signatures, seals and links
//! use) and the others kept to read what older ones made: rotation is adding a new key in
//! front, and dropping the old one once nothing needs it.

use super::Reader;
use crate::keyring::Keyring;

/// The four keyrings (each `None` when not set and not required, or invalid).
pub(super) struct Keyrings {
    pub(super) signing: Option<Keyring>,
    pub(super) data: Option<Keyring>,
    pub(super) audit: Option<Keyring>,
    pub(super) pii_index: Option<Keyring>,
}

pub(super) fn read(r: &mut Reader<'_>, required: bool) -> Keyrings {
    let mut keyring = |name: &str| {
        r.secret(name, required)
            .and_then(|spec| match Keyring::parse(&spec) {
                Ok(k) => Some(k),
                Err(e) => {
                    r.problems.push(format!(
                        "{name} is invalid: {e} (expected kid:base64-of-32-bytes,...)"
                    ));
                    None
                }
            })
    };
    Keyrings {
        signing: keyring("LEADQ_SIGNING_KEYS"),
        data: keyring("LEADQ_DATA_KEYS"),
        audit: keyring("LEADQ_AUDIT_KEYS"),
        pii_index: keyring("LEADQ_PII_INDEX_KEYS"),
    }
}

impl super::Settings {
    /// The data keyring; only call where [`Needs::keys`] was requested.
    pub fn data_keys(&self) -> &Keyring {
        self.data_keys
            .as_ref()
            .expect("LEADQ_DATA_KEYS was required at load time")
    }

    /// The audit keyring; only call where [`Needs::keys`] was requested.
    pub fn audit_keys(&self) -> &Keyring {
        self.audit_keys
            .as_ref()
            .expect("LEADQ_AUDIT_KEYS was required at load time")
    }

    /// The PII index keyring; only call where [`Needs::keys`] was requested.
    pub fn pii_index_keys(&self) -> &Keyring {
        self.pii_index_keys
            .as_ref()
            .expect("LEADQ_PII_INDEX_KEYS was required at load time")
    }

    /// The signing keyring; only call where [`Needs::keys`] was requested.
    pub fn signing_keys(&self) -> &Keyring {
        self.signing_keys
            .as_ref()
            .expect("LEADQ_SIGNING_KEYS was required at load time")
    }
}
