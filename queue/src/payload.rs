//! Payload versions: which envelope `schema_version`s a payload type reads.
//!
//! During a rolling deploy old and new workers and producers share queues, so a payload's
//! shape can only change as a new *version*, written beside the old one. A payload type says
//! which versions it reads ([`Payload::from_versioned`]); the backend decodes every job through
//! it. A version the type does not know is [`PayloadError::Unsupported`]: the job is
//! dead-lettered `unsupported_version`, never guessed at, and can be re-driven once workers
//! that read it are deployed. The rule (README, "Payload versions"): workers read versions N
//! and N−1, workers deploy before producers, and a producer writes N only for content N−1
//! cannot carry.
//!
//! Most kinds only ever had version 1: [`v1_payload!`](crate::v1_payload) gives them exactly
//! that (version 1 deserialized as before, anything else unsupported).

use serde::de::DeserializeOwned;
/// The JSON value a payload is read from (re-exported for [`v1_payload!`](crate::v1_payload)).
pub use serde_json::Value;

/// Why a payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The envelope's `schema_version` is not one this build reads for the kind.
    #[error("payload version {0} is not one this worker reads")]
    Unsupported(u32),
    /// A known version, but the payload does not have its shape.
    #[error("malformed payload: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl PayloadError {
    /// The dead-letter reason (and code): stable, part of the DLQ filters and alerts.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unsupported(_) => "unsupported_version",
            Self::Malformed(_) => "malformed_payload",
        }
    }
}

/// A job payload type, read from the envelope's `schema_version` and `payload`.
pub trait Payload: Sized {
    /// The payload of envelope version `version`, or why it cannot be read.
    fn from_versioned(version: u32, payload: serde_json::Value) -> Result<Self, PayloadError>;
}

/// Reads `payload` as `T` when `version` is 1: the decoding of a payload that never changed.
pub fn v1_only<T: DeserializeOwned>(
    version: u32,
    payload: serde_json::Value,
) -> Result<T, PayloadError> {
    match version {
        1 => Ok(serde_json::from_value(payload)?),
        v => Err(PayloadError::Unsupported(v)),
    }
}

/// Implements [`Payload`] for types that only know version 1 (see [`v1_only`]).
#[macro_export]
macro_rules! v1_payload {
    ($($t:ty),+ $(,)?) => {$(
        impl $crate::payload::Payload for $t {
            fn from_versioned(
                version: u32,
                payload: $crate::payload::Value,
            ) -> ::std::result::Result<Self, $crate::payload::PayloadError> {
                $crate::payload::v1_only(version, payload)
            }
        }
    )+};
}

// Handlers and tests that take the raw JSON (the engine's own tests, fault injection).
v1_payload!(serde_json::Value);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v1_only_payload_reads_version_1_and_refuses_any_other() {
        let v: serde_json::Value = Payload::from_versioned(1, serde_json::json!({"a": 1})).unwrap();
        assert_eq!(v, serde_json::json!({"a": 1}));
        for version in [0, 2, 3, u32::MAX] {
            let e = <serde_json::Value as Payload>::from_versioned(version, serde_json::json!({}))
                .unwrap_err();
            assert_eq!(e.reason(), "unsupported_version");
        }
        let e = v1_only::<u32>(1, serde_json::json!("x")).unwrap_err();
        assert_eq!(e.reason(), "malformed_payload");
    }
}
