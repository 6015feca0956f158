//! Per-kind settings (`LEADQ_<KIND>_<SETTING>`) and the kinds a worker process runs
//! (`LEADQ_WORKER_KINDS`), from the job catalogue's defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{KindDefaults, KindSettings, Reader};

/// Every kind's settings, and the kinds this process runs.
pub(super) fn read(
    r: &mut Reader<'_>,
    kinds: &[KindDefaults],
    lease: Duration,
) -> (BTreeMap<&'static str, KindSettings>, Vec<&'static str>) {
    let mut kind_settings = BTreeMap::new();
    for d in kinds {
        let up = d.kind.to_ascii_uppercase();
        let s = KindSettings {
            concurrency: r.positive(
                &format!("LEADQ_{up}_CONCURRENCY"),
                d.concurrency,
                "a whole number",
            ),
            max_attempts: r.positive(
                &format!("LEADQ_{up}_MAX_ATTEMPTS"),
                d.max_attempts,
                "a whole number",
            ),
            backoff_base: r.millis(&format!("LEADQ_{up}_BACKOFF_BASE_MS"), d.backoff_base),
            backoff_max: r.millis(&format!("LEADQ_{up}_BACKOFF_MAX_MS"), d.backoff_max),
            timeout: r.millis(&format!("LEADQ_{up}_TIMEOUT_MS"), d.timeout),
        };
        if s.backoff_max < s.backoff_base {
            r.problems.push(format!(
                "LEADQ_{up}_BACKOFF_MAX_MS must not be less than LEADQ_{up}_BACKOFF_BASE_MS"
            ));
        }
        if s.timeout >= lease * 20 {
            // Leases are renewed while a job runs, so a long timeout is fine; this only
            // guards against a typo of several orders of magnitude.
            r.problems.push(format!(
                "LEADQ_{up}_TIMEOUT_MS is more than 20 leases (LEADQ_LEASE_MS); check the units"
            ));
        }
        kind_settings.insert(d.kind, s);
    }
    (kind_settings, worker_kinds(r, kinds))
}

/// `LEADQ_WORKER_KINDS`: known kinds only, at least one, each once; every kind if unset.
fn worker_kinds(r: &mut Reader<'_>, kinds: &[KindDefaults]) -> Vec<&'static str> {
    let all = || kinds.iter().map(|d| d.kind).collect::<Vec<_>>();
    let vars = r.vars; // borrowed apart from `r`, which records problems below
    let Some(list) = vars
        .get("LEADQ_WORKER_KINDS")
        .filter(|s| !s.trim().is_empty())
    else {
        return all();
    };
    let mut chosen = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match kinds.iter().find(|d| d.kind == name) {
            Some(d) if !chosen.contains(&d.kind) => chosen.push(d.kind),
            Some(_) => {}
            None => r.problems.push(format!(
                "LEADQ_WORKER_KINDS names an unknown kind {name:?} (known: {})",
                all().join(", ")
            )),
        }
    }
    if chosen.is_empty() {
        r.problems
            .push("LEADQ_WORKER_KINDS names no kind; unset it to run every kind".into());
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::super::tests::{vars, ALL, KINDS};
    use super::super::{KindDefaults, Settings};

    #[test]
    fn a_worker_runs_the_kinds_it_is_given_and_only_known_ones() {
        let two = [
            KINDS[0],
            KindDefaults {
                kind: "crm_sync",
                ..KINDS[0]
            },
        ];
        let load = |list: &str| {
            Settings::load(
                &vars(&[
                    ("DATABASE_URL", "postgres://a/b"),
                    ("REDIS_URL", "redis://127.0.0.1/"),
                    ("LEADQ_WORKER_KINDS", list),
                ]),
                ALL,
                &two,
            )
        };
        let s = load(" crm_sync ,crm_sync").unwrap();
        assert_eq!(s.queue.worker_kinds, ["crm_sync"]);
        let err = load("crm_sync,lead_scor").unwrap_err().to_string();
        assert!(
            err.contains("unknown kind \"lead_scor\" (known: lead_score, crm_sync)"),
            "{err}"
        );
        let err = load(" , ").unwrap_err().to_string();
        assert!(err.contains("names no kind"), "{err}");
    }
}
