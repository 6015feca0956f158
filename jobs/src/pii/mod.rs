//! Personal data, sealed so neither Redis nor PostgreSQL holds it in clear.
//!
//! In queued payloads, phone numbers and email addresses are sealed by the producer before a
//! job is enqueued and opened by the handler that needs them. At rest, a lead's contact fields
//! and its messages' text are stored sealed the same way ([`at_rest`]), with a keyed blind
//! index ([`index`]) so a lead can still be found by its email or phone. Sealing is ChaCha20-Poly1305 (AEAD) with a random
//! nonce, under the current key of `LEADQ_DATA_KEYS` (the first key seals, every key opens:
//! the same rotation rule as signing keys). The tenant id and the field name are the
//! associated data, so a sealed value moved into another tenant's message, or into another
//! field, does not open.
//!
//! Sealed form: `sealed:v1:<kid>:<base64(nonce || ciphertext)>`.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use leadq_platform::keyring::Keyring;
use uuid::Uuid;

pub mod at_rest;
pub mod index;
pub mod mask;

pub use mask::{mask_email, mask_personal, mask_phone, MASK};

const PREFIX: &str = "sealed:v1:";

/// The field names personal data is sealed under. They are part of each seal's associated
/// data: a value sealed under one name does not open under another, so never change them.
pub mod field {
    /// A contact's email address.
    pub const EMAIL: &str = "email";
    /// A contact's phone number.
    pub const PHONE: &str = "phone";
    /// A contact's name.
    pub const NAME: &str = "name";
    /// A contact's handle (the Telegram username).
    pub const USERNAME: &str = "username";
    /// The text of a conversation message.
    pub const CONTENT: &str = "content";
}

/// Why a sealed value did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not in the sealed form.
    #[error("value is not sealed")]
    NotSealed,
    /// Sealed with a key we do not have.
    #[error("sealed with an unknown key")]
    UnknownKey,
    /// Wrong key, tenant or field, or altered.
    #[error("sealed value does not open")]
    Invalid,
}

/// Seals and opens personal data, and computes its blind index and export tokens.
#[derive(Debug, Clone)]
pub struct Sealer {
    keys: Keyring,
    index: Keyring,
}

fn aad(tenant: Uuid, field: &str) -> Vec<u8> {
    format!("leadq:pii:v1:{tenant}:{field}").into_bytes()
}

impl Sealer {
    /// A sealer over the data keys `keys`, with the blind index under `index`.
    pub fn new(keys: Keyring, index: Keyring) -> Self {
        Self { keys, index }
    }

    /// The sealer of a process whose settings were loaded with keys.
    pub fn from_settings(settings: &leadq_platform::config::Settings) -> Self {
        Self::new(
            settings.data_keys().clone(),
            settings.pii_index_keys().clone(),
        )
    }

    /// The id of the data key new seals are made under.
    pub fn current_kid(&self) -> &str {
        &self.keys.current().kid
    }

    /// Seals `plain` for `tenant`'s `field`.
    pub fn seal(&self, tenant: Uuid, field: &str, plain: &str) -> String {
        let key = self.keys.current();
        let cipher = ChaCha20Poly1305::new((&key.key).into());
        let nonce_bytes: [u8; 12] = rand::random();
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce_bytes),
                Payload {
                    msg: plain.as_bytes(),
                    aad: &aad(tenant, field),
                },
            )
            .expect("ChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut blob = nonce_bytes.to_vec();
        blob.extend_from_slice(&ct);
        format!(
            "{PREFIX}{}:{}",
            key.kid,
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }

    /// Opens a value sealed for `tenant`'s `field`.
    pub fn open(&self, tenant: Uuid, field: &str, sealed: &str) -> Result<String, OpenError> {
        let rest = sealed.strip_prefix(PREFIX).ok_or(OpenError::NotSealed)?;
        let (kid, b64) = rest.split_once(':').ok_or(OpenError::NotSealed)?;
        let key = self.keys.get(kid).ok_or(OpenError::UnknownKey)?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| OpenError::Invalid)?;
        if blob.len() < 12 {
            return Err(OpenError::Invalid);
        }
        let (nonce, ct) = blob.split_at(12);
        let plain = ChaCha20Poly1305::new((&key.key).into())
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: &aad(tenant, field),
                },
            )
            .map_err(|_| OpenError::Invalid)?;
        String::from_utf8(plain).map_err(|_| OpenError::Invalid)
    }

    /// Seals an optional field in place (nothing to do for `None`).
    pub fn seal_in_place(&self, tenant: Uuid, field: &str, value: &mut Option<String>) {
        if let Some(plain) = value.take() {
            *value = Some(self.seal(tenant, field, &plain));
        }
    }

    /// Seals a contact's email and phone in place, under their field names ([`field`]): what
    /// every producer of a lead change does before the change is queued.
    pub fn seal_contact(
        &self,
        tenant: Uuid,
        email: &mut Option<String>,
        phone: &mut Option<String>,
    ) {
        self.seal_in_place(tenant, field::EMAIL, email);
        self.seal_in_place(tenant, field::PHONE, phone);
    }

    /// Opens a sealed optional field in place, for a handler: a value that cannot be opened is
    /// a permanent failure (`sealed_data_unreadable`), since no retry will open it.
    pub fn open_in_place(
        &self,
        tenant: Uuid,
        field: &str,
        value: &mut Option<String>,
    ) -> Result<(), leadq_queue::JobError> {
        if let Some(sealed) = value.as_deref() {
            let plain = self.open(tenant, field, sealed).map_err(|e| {
                leadq_queue::JobError::permanent(
                    "sealed_data_unreadable",
                    anyhow::anyhow!("{field}: {e}"),
                )
            })?;
            *value = Some(plain);
        }
        Ok(())
    }

    /// Whether `value` is in the sealed form.
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_for_its_tenant_and_field() {
        let s = Sealer::new(Keyring::random("d1"), Keyring::random("i1"));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = s.seal(a, "email", "ada@example.com");
        assert!(Sealer::is_sealed(&sealed));
        assert!(!sealed.contains("ada"));
        assert_eq!(s.open(a, "email", &sealed).unwrap(), "ada@example.com");
        assert_eq!(s.open(b, "email", &sealed), Err(OpenError::Invalid));
        assert_eq!(s.open(a, "phone", &sealed), Err(OpenError::Invalid));
        assert_ne!(
            sealed,
            s.seal(a, "email", "ada@example.com"),
            "random nonce"
        );
        let other = Sealer::new(Keyring::random("d2"), Keyring::random("i1"));
        assert_eq!(other.open(a, "email", &sealed), Err(OpenError::UnknownKey));
        assert_eq!(
            s.open(a, "email", "ada@example.com"),
            Err(OpenError::NotSealed)
        );
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(s.open(a, "email", &tampered), Err(OpenError::Invalid));
    }
}
