//! Dead-letter operations: list (paged, filtered), inspect, re-drive, purge.
//!
//! Operators reach these through `GET/POST /v1/dlq…` (operator token) and `leadq dlq …`; both
//! audit every action. Re-drive puts the *same* job back (same id, same envelope, so the same
//! `message_id` and signature): handlers stay idempotent and the worker still verifies and
//! authorizes it like any job. Bulk actions first collect the matching ids (ids only, so
//! memory stays small), then act in chunks of [`CHUNK`], one atomic script call each, reporting
//! progress after every chunk.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{ms_to_time, DeadLetter, Queue, QueueError};

/// Ids per script call of a bulk action.
pub const CHUNK: usize = 500;
/// Dead letters read per Redis round trip while listing.
const PAGE: usize = 200;

/// Which dead letters of a kind an operation applies to. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this tenant's.
    pub tenant: Option<Uuid>,
    /// Only this reason (`max_attempts`, `unauthorized`, `poisoned`, a permanent error code…).
    pub reason: Option<String>,
    /// Only those dead before this time.
    pub dead_before: Option<DateTime<Utc>>,
    /// Only those dead at or after this time.
    pub dead_after: Option<DateTime<Utc>>,
}

impl Filter {
    /// Whether the dead letter `d` is one this filter selects.
    pub fn matches(&self, d: &DeadLetter) -> bool {
        self.tenant
            .is_none_or(|t| d.envelope.as_ref().is_some_and(|e| e.tenant_id == t))
            && self.reason.as_deref().is_none_or(|r| d.reason == r)
            && self.dead_before.is_none_or(|b| d.dead_at < b)
            && self.dead_after.is_none_or(|a| d.dead_at >= a)
    }
}

/// One page of dead letters, newest first.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The dead letters.
    pub items: Vec<DeadLetter>,
    /// Pass it back as `cursor` for the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// Whether `c` has a cursor's form (what [`Page::next_cursor`] holds), so a caller can refuse
/// one before it does anything else.
pub fn valid_cursor(c: &str) -> bool {
    parse_cursor(c).is_ok()
}

/// A cursor: the position after the last item returned (`<dead_at ms>:<job id>`).
fn parse_cursor(c: &str) -> Result<(i64, String), QueueError> {
    let (ms, id) = c
        .split_once(':')
        .ok_or_else(|| QueueError::Invalid("cursor".into()))?;
    let ms = ms
        .parse()
        .map_err(|_| QueueError::Invalid("cursor".into()))?;
    Ok((ms, id.to_owned()))
}

/// Progress of a bulk action: `(done, total)`, called after every chunk.
pub type Progress<'a> = &'a mut (dyn FnMut(usize, usize) + Send);

impl Queue {
    /// Reads the dead letters with these ids, all of one shard (missing ones are skipped).
    pub(super) async fn dead_by_ids(
        &self,
        kind: &str,
        shard: u16,
        entries: &[(String, i64)],
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let k = self.keys(kind, shard);
        let mut pipe = redis::pipe();
        for (id, _) in entries {
            pipe.cmd("HMGET")
                .arg(&k.dead_data)
                .arg(id)
                .arg(format!("{id}:r"))
                .arg(format!("{id}:c"))
                .arg(format!("{id}:a"));
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut self.conn()).await?;
        Ok(entries
            .iter()
            .zip(rows)
            .map(|((id, at), vals)| {
                let get = |i: usize| vals.get(i).cloned().flatten().unwrap_or_default();
                DeadLetter {
                    job_id: id.parse().unwrap_or_default(),
                    kind: kind.to_owned(),
                    envelope: serde_json::from_str(&get(0)).ok(),
                    reason: get(1),
                    last_error_code: get(2),
                    attempts: get(3).parse().unwrap_or(0),
                    dead_at: ms_to_time(*at),
                }
            })
            .collect())
    }

    /// One page of `kind`'s dead letters matching `filter`, newest first, at most `limit`,
    /// starting after `cursor`.
    pub async fn dead_letter_page(
        &self,
        kind: &str,
        filter: &Filter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, QueueError> {
        self.page_scanning(kind, filter, cursor, limit, None).await
    }

    /// At most `limit` of `kind`'s dead letters matching `filter`, newest first, looked for
    /// among the newest `among` of all tenants only: what a view shown on every page load (a
    /// tenant's overview) can afford. Dead letters are one set per kind for every tenant, so an
    /// unbounded look for a tenant with few would read every other tenant's.
    pub async fn newest_dead_letters(
        &self,
        kind: &str,
        filter: &Filter,
        limit: usize,
        among: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(self
            .page_scanning(kind, filter, None, limit, Some(among))
            .await?
            .items)
    }

    /// [`Self::dead_letter_page`], ending early once `budget` letters were looked at (with a
    /// cursor to go on from).
    async fn page_scanning(
        &self,
        kind: &str,
        filter: &Filter,
        cursor: Option<&str>,
        limit: usize,
        budget: Option<usize>,
    ) -> Result<Page, QueueError> {
        let limit = limit.clamp(1, 1000);
        let mut examined = 0usize;
        let (mut max_ms, mut after_id) = match cursor {
            Some(c) => {
                let (ms, id) = parse_cursor(c)?;
                (ms, Some(id))
            }
            None => (
                filter
                    .dead_before
                    .map_or(i64::MAX, |b| b.timestamp_millis() - 1),
                None,
            ),
        };
        let min_ms = filter.dead_after.map(|a| a.timestamp_millis());
        let min = min_ms.map_or("-inf".to_owned(), |m| m.to_string());
        let mut items = Vec::new();
        loop {
            // From every shard, everything at or below max_ms, newest first; ties on one
            // millisecond are ordered by id (descending), and those at or above the cursor's
            // id were already returned. Merged newest first, and cut where the first shard
            // that has more stops, so nothing of that shard is skipped.
            let mut merged: Vec<(i64, String, u16)> = Vec::new();
            let mut cut: Option<(i64, String)> = None;
            for shard in self.shards() {
                let dead = &self.keys(kind, shard).dead;
                let mut entries: Vec<(String, i64)> = Vec::new();
                // Past a cursor, the cursor's millisecond is read whole and the older ones
                // after it: a reap or an ack batch buries hundreds of jobs in one millisecond,
                // and a window of PAGE + 1 from that millisecond could hold only letters
                // already returned — the listing (and a bulk re-drive or purge built on it)
                // then ended there, leaving the rest behind.
                let upper = if after_id.is_some() {
                    if min_ms.is_none_or(|m| max_ms >= m) {
                        let ties: Vec<(String, i64)> = redis::cmd("ZRANGE")
                            .arg(dead)
                            .arg(max_ms)
                            .arg(max_ms)
                            .arg("BYSCORE")
                            .arg("REV")
                            .arg("WITHSCORES")
                            .query_async(&mut self.conn())
                            .await?;
                        entries.extend(ties);
                    }
                    format!("({max_ms}")
                } else if max_ms == i64::MAX {
                    "+inf".to_owned()
                } else {
                    max_ms.to_string()
                };
                let older: Vec<(String, i64)> = redis::cmd("ZRANGE")
                    .arg(dead)
                    .arg(upper)
                    .arg(&min)
                    .arg("BYSCORE")
                    .arg("REV")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(PAGE + 1)
                    .arg("WITHSCORES")
                    .query_async(&mut self.conn())
                    .await?;
                let full = older.len() > PAGE;
                entries.extend(older);
                if full {
                    if let Some((id, ms)) = entries.last() {
                        let last = (*ms, id.clone());
                        if cut.as_ref().is_none_or(|c| last > *c) {
                            cut = Some(last);
                        }
                    }
                }
                merged.extend(entries.into_iter().map(|(id, ms)| (ms, id, shard)));
            }
            merged.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
            let exhausted = cut.is_none();
            let fresh: Vec<(i64, String, u16)> = merged
                .into_iter()
                .filter(|(ms, id, _)| {
                    !(after_id
                        .as_deref()
                        .is_some_and(|a| *ms == max_ms && id.as_str() >= a))
                })
                .filter(|(ms, id, _)| cut.as_ref().is_none_or(|c| (*ms, id.clone()) >= *c))
                .collect();
            if fresh.is_empty() {
                return Ok(Page {
                    items,
                    next_cursor: None,
                });
            }
            // The window's letters in one pipelined read per shard, not a round trip each (a
            // filtered page may walk many windows of other tenants' letters).
            let mut by_shard: BTreeMap<u16, Vec<(String, i64)>> = BTreeMap::new();
            for (ms, id, shard) in &fresh {
                by_shard.entry(*shard).or_default().push((id.clone(), *ms));
            }
            let mut read: HashMap<(u16, String), DeadLetter> = HashMap::new();
            for (shard, entries) in by_shard {
                let letters = self.dead_by_ids(kind, shard, &entries).await?;
                for ((id, _), d) in entries.into_iter().zip(letters) {
                    read.insert((shard, id), d);
                }
            }
            for (ms, id, shard) in fresh {
                // The position is the entry's own (its id as stored, which a forged job's may
                // not be a uuid), so the next read starts exactly after it.
                let pos = format!("{ms}:{id}");
                max_ms = ms;
                after_id = Some(id.clone());
                let Some(d) = read.remove(&(shard, id)) else {
                    continue;
                };
                examined += 1;
                if filter.matches(&d) {
                    items.push(d);
                    if items.len() == limit {
                        return Ok(Page {
                            items,
                            next_cursor: Some(pos),
                        });
                    }
                }
                if budget.is_some_and(|b| examined >= b) {
                    return Ok(Page {
                        items,
                        next_cursor: Some(pos),
                    });
                }
            }
            if exhausted {
                return Ok(Page {
                    items,
                    next_cursor: None,
                });
            }
        }
    }

    /// One dead letter of `kind`, if it is one.
    pub async fn dead_letter(
        &self,
        kind: &str,
        job_id: Uuid,
    ) -> Result<Option<DeadLetter>, QueueError> {
        let id = job_id.to_string();
        for shard in self.shards() {
            let at: Option<i64> = redis::cmd("ZSCORE")
                .arg(&self.keys(kind, shard).dead)
                .arg(&id)
                .query_async(&mut self.conn())
                .await?;
            if let Some(at) = at {
                return Ok(self.dead_by_ids(kind, shard, &[(id, at)]).await?.pop());
            }
        }
        Ok(None)
    }

    /// The ids of every dead letter of `kind` matching `filter`.
    pub async fn dead_letter_ids(
        &self,
        kind: &str,
        filter: &Filter,
    ) -> Result<Vec<Uuid>, QueueError> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .dead_letter_page(kind, filter, cursor.as_deref(), 1000)
                .await?;
            ids.extend(page.items.iter().map(|d| d.job_id));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(ids),
            }
        }
    }

    async fn dlq_action(
        &self,
        kind: &str,
        action: &str,
        ids: &[Uuid],
        progress: Progress<'_>,
    ) -> Result<usize, QueueError> {
        let mut done = 0;
        for (i, chunk) in ids.chunks(CHUNK).enumerate() {
            // Each id is a dead letter of one shard at most; the script skips the others.
            for shard in self.shards() {
                let k = self.keys(kind, shard);
                let mut inv = self.inner.scripts.dlq.prepare_invoke();
                inv.key(&k.dead)
                    .key(&k.dead_data)
                    .key(&k.jobs)
                    .key(&k.ready)
                    .key(&k.wake)
                    .key(&k.fair)
                    .key(&k.index)
                    .key(&k.parked)
                    .arg(action);
                for id in chunk {
                    inv.arg(id.to_string());
                }
                let n: usize = inv.invoke_async(&mut self.conn()).await?;
                done += n;
            }
            progress((i * CHUNK + chunk.len()).min(ids.len()), ids.len());
        }
        if action == "redrive" && done > 0 {
            self.wake(kind).await?;
        }
        Ok(done)
    }

    /// Puts dead letters back on the queue (same job, same envelope, attempts reset). Returns
    /// how many were re-driven (ids that are no longer dead letters are skipped).
    pub async fn redrive(
        &self,
        kind: &str,
        ids: &[Uuid],
        progress: Progress<'_>,
    ) -> Result<usize, QueueError> {
        self.dlq_action(kind, "redrive", ids, progress).await
    }

    /// Deletes dead letters for good. Returns how many were purged.
    pub async fn purge(
        &self,
        kind: &str,
        ids: &[Uuid],
        progress: Progress<'_>,
    ) -> Result<usize, QueueError> {
        self.dlq_action(kind, "purge", ids, progress).await
    }
}
