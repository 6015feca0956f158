//! Expiring records: small string values under a caller's namespace and id, each with its own
//! TTL, for server-side state every API replica must see (the web console's login sessions,
//! the progress of its bulk operations).
//!
//! Why here: Redis is already shared by every replica, and expiry is what such state needs
//! (a session ends by itself when idle; progress is kept a while, then forgotten), so no table,
//! sweeper or sticky routing is needed. The engine stores opaque strings; what they mean is
//! the caller's.
//!
//! A record is one key, `{<prefix>:rec:<namespace>:<id>}` (like the edge guards' keys, the
//! whole name is the hash tag: records spread over a Cluster's slots, and each command
//! touches one key). Namespaces and ids are limited to `[A-Za-z0-9_-]`, 1 to [`NAME_MAX`]
//! characters, so no caller-chosen name can reach into another key; a caller storing a
//! secret-bearing thing (a session) should pass a digest of the secret (SHA-256 hex), never the
//! secret. Values are not size-limited here: keep them small (they sit in Redis memory).

use std::time::Duration;

use crate::{Queue, QueueError};

/// The longest namespace or id a record may have.
pub const NAME_MAX: usize = 128;

fn valid_name(s: &str) -> bool {
    (1..=NAME_MAX).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Milliseconds of `d`, at least 1 (a zero TTL would be refused by Redis).
fn ms(d: Duration) -> u64 {
    d.as_millis().clamp(1, u64::MAX as u128) as u64
}

/// The key of a record; refuses names outside `[A-Za-z0-9_-]{1,NAME_MAX}`.
fn key(prefix: &str, namespace: &str, id: &str) -> Result<String, QueueError> {
    if !valid_name(namespace) {
        return Err(QueueError::Invalid("record namespace".into()));
    }
    if !valid_name(id) {
        return Err(QueueError::Invalid("record id".into()));
    }
    Ok(format!("{{{prefix}:rec:{namespace}:{id}}}"))
}

impl Queue {
    fn record_key(&self, namespace: &str, id: &str) -> Result<String, QueueError> {
        key(&self.settings().prefix, namespace, id)
    }

    /// Stores `value` as the record `id` of `namespace`, replacing any, to expire after `ttl`
    /// (at least 1 ms). One `SET … PX`.
    pub async fn record_put(
        &self,
        namespace: &str,
        id: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), QueueError> {
        let () = redis::cmd("SET")
            .arg(self.record_key(namespace, id)?)
            .arg(value)
            .arg("PX")
            .arg(ms(ttl))
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// The record `id` of `namespace`, `None` if there is none (never stored, expired,
    /// deleted). With `touch`, its TTL is set to `touch` (at least 1 ms) in the same command
    /// as the read (`GETEX … PX`), so a session in use stays alive and one read just before
    /// its expiry cannot return it while leaving it to expire. Without, one `GET`; the TTL is
    /// left as it is.
    pub async fn record_get(
        &self,
        namespace: &str,
        id: &str,
        touch: Option<Duration>,
    ) -> Result<Option<String>, QueueError> {
        let key = self.record_key(namespace, id)?;
        let cmd = match touch {
            Some(ttl) => {
                let mut c = redis::cmd("GETEX");
                c.arg(key).arg("PX").arg(ms(ttl));
                c
            }
            None => {
                let mut c = redis::cmd("GET");
                c.arg(key);
                c
            }
        };
        Ok(cmd.query_async(&mut self.conn()).await?)
    }

    /// Deletes the record `id` of `namespace` (nothing happens if there is none). One `DEL`.
    pub async fn record_delete(&self, namespace: &str, id: &str) -> Result<(), QueueError> {
        let _: i64 = redis::cmd("DEL")
            .arg(self.record_key(namespace, id)?)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_key_in_its_own_slot() {
        assert_eq!(
            key("leadq", "session", "ab12-_Z").unwrap(),
            "{leadq:rec:session:ab12-_Z}"
        );
        let hex = "a".repeat(64);
        assert!(key("leadq", "session", &hex).is_ok());
    }

    #[test]
    fn names_outside_the_safe_alphabet_are_refused() {
        for (ns, id) in [
            ("", "x"),
            ("session", ""),
            ("a:b", "x"),
            ("session", "x}y"),
            ("session", "x{y"),
            ("session", "a b"),
            ("session", "é"),
            ("session", "*"),
        ] {
            assert!(
                matches!(key("leadq", ns, id), Err(QueueError::Invalid(_))),
                "{ns:?} {id:?}"
            );
        }
        assert!(key("leadq", "s", &"a".repeat(NAME_MAX)).is_ok());
        assert!(key("leadq", "s", &"a".repeat(NAME_MAX + 1)).is_err());
    }
}
