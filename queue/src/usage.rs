//! What each tenant had accepted, per kind and UTC day: the enqueue script counts every job it
//! stores (duplicates are not counted; re-drives do not pass through it), per tenant, in a
//! hash per kind, shard and day (`Keys::usage`), kept eight days. Billing reconciles these
//! counts against what PostgreSQL recorded (`leadq_jobs::ops::billing`): a job accepted here
//! but never recorded there was lost on the way.

use std::collections::HashMap;

use chrono::NaiveDate;
use uuid::Uuid;

use crate::{valid_kind, Queue, QueueError};

/// The day part of the usage key: `YYYYMMDD`.
pub(crate) fn usage_day(day: NaiveDate) -> String {
    day.format("%Y%m%d").to_string()
}

impl Queue {
    /// Jobs of `kind` newly enqueued on the UTC day `day`, per tenant (summed over shards).
    pub async fn accepted(
        &self,
        kind: &str,
        day: NaiveDate,
    ) -> Result<HashMap<Uuid, u64>, QueueError> {
        if !valid_kind(kind) {
            return Err(QueueError::Invalid(format!("bad kind {kind:?}")));
        }
        let mut total: HashMap<Uuid, u64> = HashMap::new();
        for shard in self.shards() {
            let key = self.keys(kind, shard).usage(&usage_day(day));
            let counts: HashMap<String, u64> = redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut self.conn())
                .await?;
            for (tenant, n) in counts {
                if let Ok(t) = tenant.parse() {
                    *total.entry(t).or_default() += n;
                }
            }
        }
        Ok(total)
    }
}
