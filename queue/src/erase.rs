//! Erasure: removes a data subject's queued and dead-lettered jobs (right to be forgotten).

use crate::envelope::Envelope;
use crate::{Queue, QueueError};

impl Queue {
    /// Removes every queued or dead-lettered job of `kind` whose envelope matches `wanted`
    /// (erasure of personal data). Scans the queue's job data in slices (erasure is rare; the
    /// scan never blocks Redis for long). Running jobs are left to their handler, which checks
    /// the erasure tombstone. Returns (removed, still running).
    pub async fn erase_where(
        &self,
        kind: &str,
        wanted: impl Fn(&Envelope) -> bool,
    ) -> Result<(u64, u64), QueueError> {
        let (mut removed, mut running) = (0, 0);
        for shard in self.shards() {
            let (r, n) = self.erase_in_shard(kind, shard, &wanted).await?;
            removed += r;
            running += n;
        }
        Ok((removed, running))
    }

    async fn erase_in_shard(
        &self,
        kind: &str,
        shard: u16,
        wanted: &impl Fn(&Envelope) -> bool,
    ) -> Result<(u64, u64), QueueError> {
        let k = self.keys(kind, shard);
        let mut conn = self.conn();
        let mut matched: Vec<String> = Vec::new();
        for hash in [&k.jobs, &k.dead_data] {
            let mut cursor: u64 = 0;
            loop {
                let (next, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
                    .arg(hash)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn)
                    .await?;
                for (field, value) in page {
                    if field.contains(':') {
                        continue; // attempts, owner, … not an envelope
                    }
                    if serde_json::from_str::<Envelope>(&value).is_ok_and(|e| wanted(&e)) {
                        matched.push(field);
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        let (mut removed, mut running) = (0, 0);
        for chunk in matched.chunks(500) {
            let (r, n): (u64, u64) = self
                .inner
                .scripts
                .erase
                .key(&k.jobs)
                .key(&k.ready)
                .key(&k.scheduled)
                .key(&k.leases)
                .key(&k.dead)
                .key(&k.dead_data)
                .key(&k.index)
                .key(&k.parked)
                .arg(chunk)
                .invoke_async(&mut conn)
                .await?;
            removed += r;
            running += n;
        }
        Ok((removed, running))
    }
}
