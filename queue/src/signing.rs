//! Signed envelopes: the worker runs only what a leadq producer enqueued.
//!
//! Redis is not a trust boundary: anything that can write to it (a compromised host, a bug, an
//! operator typo) could otherwise plant a job for any tenant. Every envelope is therefore signed
//! at enqueue with HMAC-SHA256 over its **canonical form** (the JSON of every field except
//! `signature`, with object keys sorted and no whitespace: what `serde_json::Value` writes), and
//! the backend verifies it before anything else. Verification works on the stored JSON, so
//! fields a newer producer added are covered too. Keys come from `LEADQ_SIGNING_KEYS`; the
//! first signs, all verify (rotation).

use base64::Engine;
use hmac::{Hmac, Mac};
use leadq_platform::keyring::Keyring;
use sha2::Sha256;

use crate::envelope::{Envelope, Signature};

type HmacSha256 = Hmac<Sha256>;

/// Why an envelope was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not a JSON object.
    #[error("envelope is not a JSON object")]
    Malformed,
    /// No signature.
    #[error("envelope is unsigned")]
    Unsigned,
    /// Signed with a key we do not have.
    #[error("envelope is signed with an unknown key")]
    UnknownKey,
    /// The HMAC does not match: forged or altered.
    #[error("envelope signature does not match")]
    Mismatch,
}

/// Signs and verifies envelopes.
#[derive(Debug, Clone)]
pub struct Signer {
    keys: Keyring,
}

fn mac(key: &[u8; 32], canonical: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(canonical);
    m
}

impl Signer {
    /// A signer over `keys`.
    pub fn new(keys: Keyring) -> Self {
        Self { keys }
    }

    /// Sets `envelope.signature` with the current key.
    pub fn sign(&self, envelope: &mut Envelope) -> Result<(), serde_json::Error> {
        envelope.signature = None;
        let canonical = serde_json::to_vec(&serde_json::to_value(&*envelope)?)?;
        let key = self.keys.current();
        let tag = mac(&key.key, &canonical).finalize().into_bytes();
        envelope.signature = Some(Signature {
            kid: key.kid.clone(),
            hmac: base64::engine::general_purpose::STANDARD.encode(tag),
        });
        Ok(())
    }

    /// Verifies stored envelope JSON and returns the parsed value (signature removed).
    pub fn verify(&self, raw: &str) -> Result<serde_json::Value, SignatureError> {
        let mut value: serde_json::Value =
            serde_json::from_str(raw).map_err(|_| SignatureError::Malformed)?;
        let obj = value.as_object_mut().ok_or(SignatureError::Malformed)?;
        let sig = obj.remove("signature").ok_or(SignatureError::Unsigned)?;
        let sig: Signature = serde_json::from_value(sig).map_err(|_| SignatureError::Unsigned)?;
        let key = self.keys.get(&sig.kid).ok_or(SignatureError::UnknownKey)?;
        let tag = base64::engine::general_purpose::STANDARD
            .decode(sig.hmac.as_bytes())
            .map_err(|_| SignatureError::Mismatch)?;
        let canonical = serde_json::to_vec(&value).map_err(|_| SignatureError::Malformed)?;
        // Constant-time comparison.
        mac(&key.key, &canonical)
            .verify_slice(&tag)
            .map_err(|_| SignatureError::Mismatch)?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn envelope() -> Envelope {
        Envelope {
            schema_version: 1,
            message_id: "m1".into(),
            tenant_id: uuid::Uuid::new_v4(),
            user_id: "api_key:x".into(),
            action: "lead_score".into(),
            payload: serde_json::json!({"b": 1.5, "a": {"z": "é", "y": [1, 2]}}),
            timestamp: Utc::now(),
            correlation_id: "c1".into(),
            trace_context: [(
                "traceparent".to_owned(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
            )]
            .into(),
            signature: None,
        }
    }

    #[test]
    fn a_signed_envelope_verifies_and_any_change_breaks_it() {
        let s = Signer::new(Keyring::random("k1"));
        let mut e = envelope();
        s.sign(&mut e).unwrap();
        let raw = serde_json::to_string(&e).unwrap();
        let v = s.verify(&raw).unwrap();
        let back: Envelope = serde_json::from_value(v).unwrap();
        assert_eq!(back.message_id, "m1");

        let other_tenant = raw.replace(&e.tenant_id.to_string(), &uuid::Uuid::new_v4().to_string());
        assert_eq!(s.verify(&other_tenant), Err(SignatureError::Mismatch));
        let altered = raw.replace("\"m1\"", "\"m2\"");
        assert_eq!(s.verify(&altered), Err(SignatureError::Mismatch));
        // A forged trace context is an alteration like any other.
        let retraced = raw.replace("00f067aa0ba902b7", "00f067aa0ba902b8");
        assert_eq!(s.verify(&retraced), Err(SignatureError::Mismatch));
        // An envelope from a producer without tracing (no trace_context) still verifies.
        let mut untraced = envelope();
        untraced.trace_context.clear();
        s.sign(&mut untraced).unwrap();
        let raw_untraced = serde_json::to_string(&untraced).unwrap();
        assert!(!raw_untraced.contains("trace_context"));
        assert!(s.verify(&raw_untraced).is_ok());
        let mut unsigned = e.clone();
        unsigned.signature = None;
        assert_eq!(
            s.verify(&serde_json::to_string(&unsigned).unwrap()),
            Err(SignatureError::Unsigned)
        );
        let forged = Signer::new(Keyring::random("k1"));
        assert_eq!(forged.verify(&raw), Err(SignatureError::Mismatch));
        let other_kid = Signer::new(Keyring::random("k9"));
        assert_eq!(other_kid.verify(&raw), Err(SignatureError::UnknownKey));
        assert_eq!(s.verify("[1]"), Err(SignatureError::Malformed));
    }

    #[test]
    fn payloads_with_floats_verify_after_the_round_trip_through_redis() {
        // Found by `leadq bench`: without serde_json's float_roundtrip, some floats parse back
        // one ulp off, the canonical form changes, and genuine envelopes fail verification.
        let s = Signer::new(Keyring::random("k1"));
        let mut x = 1_795_404_459_215.700_4_f64;
        for i in 0..5_000 {
            x += 0.123_456_789_1 * f64::from(i % 97);
            let mut e = envelope();
            e.payload = serde_json::json!({"t_enq": x, "ratio": x / 7.0, "seq": i});
            s.sign(&mut e).unwrap();
            let raw = serde_json::to_string(&e).unwrap();
            assert!(s.verify(&raw).is_ok(), "float {x} broke verification");
        }
    }

    #[test]
    fn fields_unknown_to_this_build_are_covered_too() {
        let s = Signer::new(Keyring::random("k1"));
        let mut v = serde_json::to_value(envelope()).unwrap();
        v["added_in_v2"] = serde_json::json!("x");
        // Sign as a newer producer would: over every field it wrote.
        let canonical = serde_json::to_vec(&v).unwrap();
        let tag = mac(&s.keys.current().key, &canonical)
            .finalize()
            .into_bytes();
        v["signature"] = serde_json::json!({"kid": "k1",
            "hmac": base64::engine::general_purpose::STANDARD.encode(tag)});
        let raw = serde_json::to_string(&v).unwrap();
        assert!(s.verify(&raw).is_ok());
        assert_eq!(
            s.verify(&raw.replace("\"x\"", "\"y\"")),
            Err(SignatureError::Mismatch)
        );
    }
}
