//! The CRM sync request: which version of a lead the tenant's CRM should get. The lead store
//! decides a version is wanted ([`crate::lead::store::Applied::sync`]); the job that changed
//! the lead asks for it here, after its commit; the `crm_sync` job
//! ([`crate::integrations::hubspot`]) delivers it.

use leadq_queue::envelope::{Envelope, JobMeta};
use leadq_queue::error::JobError;
use leadq_queue::Queue;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::kinds;

/// The `crm_sync` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncInput {
    /// The lead.
    pub lead_id: Uuid,
    /// The lead version that asked for the sync.
    pub version: i64,
}

// One version so far (`leadq_queue::payload`).
leadq_queue::v1_payload!(SyncInput);

/// Enqueues the `crm_sync` job for `version` of a lead, on behalf of the handler running
/// `meta`'s job. The message id is per lead version: asking twice enqueues once.
pub async fn request(
    queue: &Queue,
    meta: &JobMeta,
    lead_id: Uuid,
    version: i64,
) -> Result<(), JobError> {
    let payload = serde_json::to_value(SyncInput { lead_id, version })
        .map_err(|e| JobError::permanent("serialize", e))?;
    let envelope = Envelope::new(
        meta.tenant_id,
        format!("system:{}", meta.action),
        kinds::CRM_SYNC,
        payload,
    )
    .message_id(format!("crm_sync:{lead_id}:{version}"))
    .correlation_id(meta.correlation_id.clone());
    queue
        .enqueue_now(envelope)
        .await
        .map_err(|e| JobError::transient("queue_unavailable", e))?;
    Ok(())
}
