//! Verifying a delivery: Chatwoot signs `"<X-Chatwoot-Timestamp>.<raw body>"` with the
//! webhook's secret, so the check runs over the raw bytes, before anything parses them, and
//! refuses deliveries outside a replay window (`docs/contracts/chatwoot.md`, "Signing").

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far `X-Chatwoot-Timestamp` may be from now, either way, in seconds.
pub const REPLAY_WINDOW_SECS: i64 = 300;

/// Why a delivery failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Signature or timestamp header missing, malformed or wrong.
    #[error("missing or invalid signature")]
    BadSignature,
    /// A valid signature, but the timestamp is outside the replay window.
    #[error("timestamp outside the replay window")]
    Stale,
}

/// Verifies a delivery: `signature` must be `sha256=<hex>` of HMAC-SHA256(`secret`,
/// `"<timestamp>.<body>"`), and `timestamp` within [`REPLAY_WINDOW_SECS`] of `now`.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), Rejected> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(Rejected::BadSignature);
    };
    let expected = sig
        .strip_prefix("sha256=")
        .filter(|h| h.len() == 64)
        .and_then(|h| hex::decode(h).ok())
        .ok_or(Rejected::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| Rejected::BadSignature)?;
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    // Constant-time comparison.
    mac.verify_slice(&expected)
        .map_err(|_| Rejected::BadSignature)?;
    let ts: i64 = ts.trim().parse().map_err(|_| Rejected::BadSignature)?;
    // `abs_diff`: a timestamp near i64's ends must not overflow (a panic in a debug build).
    if now.timestamp().abs_diff(ts) > REPLAY_WINDOW_SECS.unsigned_abs() {
        return Err(Rejected::Stale);
    }
    Ok(())
}

/// Signs a body as Chatwoot does (for tests, fixtures and `leadq` tooling).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::Value;

    const SECRET: &[u8] = b"wJ2fQk8sXyZ3pLmN4rTvB6cD";

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_780_000_000, 0).unwrap()
    }

    #[test]
    fn a_chatwoot_signature_over_the_raw_escaped_bytes_verifies() {
        let body = br#"{"content":"a \u003cb\u003e \u0026 c","event":"message_created"}"#;
        let ts = now().timestamp();
        let sig = sign(SECRET, ts, body);
        let tss = ts.to_string();
        assert_eq!(verify(SECRET, Some(&tss), Some(&sig), body, now()), Ok(()));
        // Re-serialised, the escapes are gone and the signature no longer matches.
        let reserialized =
            serde_json::to_vec(&serde_json::from_slice::<Value>(body).unwrap()).unwrap();
        assert_eq!(
            verify(SECRET, Some(&tss), Some(&sig), &reserialized, now()),
            Err(Rejected::BadSignature)
        );
    }

    #[test]
    fn missing_wrong_unprefixed_and_stale_signatures_are_refused() {
        let body = br#"{"event":"contact_created"}"#;
        let ts = now().timestamp();
        let tss = ts.to_string();
        let good = sign(SECRET, ts, body);
        assert_eq!(
            verify(SECRET, None, Some(&good), body, now()),
            Err(Rejected::BadSignature)
        );
        assert_eq!(
            verify(SECRET, Some(&tss), None, body, now()),
            Err(Rejected::BadSignature)
        );
        assert_eq!(
            verify(b"another secret", Some(&tss), Some(&good), body, now()),
            Err(Rejected::BadSignature)
        );
        // Issue #13809's variant: HMAC of the body alone.
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
        mac.update(body);
        let bare = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(
            verify(SECRET, Some(&tss), Some(&bare), body, now()),
            Err(Rejected::BadSignature)
        );
        assert_eq!(
            verify(
                SECRET,
                Some(&tss),
                Some(good.trim_start_matches("sha256=")),
                body,
                now()
            ),
            Err(Rejected::BadSignature)
        );
        for skew in [-301, 301] {
            let t = ts + skew;
            let sig = sign(SECRET, t, body);
            assert_eq!(
                verify(SECRET, Some(&t.to_string()), Some(&sig), body, now()),
                Err(Rejected::Stale),
                "{skew}"
            );
        }
        // Signed timestamps at i64's ends are stale, not an overflow.
        for t in [i64::MIN, i64::MAX] {
            let sig = sign(SECRET, t, body);
            assert_eq!(
                verify(SECRET, Some(&t.to_string()), Some(&sig), body, now()),
                Err(Rejected::Stale),
                "{t}"
            );
        }
        let t = ts - 299;
        assert_eq!(
            verify(
                SECRET,
                Some(&t.to_string()),
                Some(&sign(SECRET, t, body)),
                body,
                now()
            ),
            Ok(())
        );
    }
}
