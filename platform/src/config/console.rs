//! Settings of the operator console (`/console`): how long a signed-in session lasts, and
//! where its links to the Grafana dashboards point. A session ends after
//! `LEADQ_CONSOLE_IDLE_SECS` without a request, and in any case `LEADQ_CONSOLE_MAX_SECS` after
//! sign-in: an idle limit alone would let a session kept busy by a forgotten auto-refreshing
//! tab live forever.

use std::time::Duration;

use super::Reader;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// `LEADQ_CONSOLE_IDLE_SECS`, default 1800 (30 minutes).
    pub idle: Duration,
    /// `LEADQ_CONSOLE_MAX_SECS`, default 43200 (12 hours).
    pub max_age: Duration,
    /// `LEADQ_GRAFANA_URL`: the Grafana the dashboards (`dashboards/*.json`) are provisioned
    /// in, e.g. `https://grafana.example.com`; without it the console names the dashboards
    /// without links.
    pub grafana_url: Option<String>,
}

pub(super) fn read(r: &mut Reader<'_>) -> ConsoleSettings {
    let idle = r.secs("LEADQ_CONSOLE_IDLE_SECS", Duration::from_secs(1800));
    let max_age = r.secs("LEADQ_CONSOLE_MAX_SECS", Duration::from_secs(43_200));
    if idle > max_age {
        r.problems.push(format!(
            "LEADQ_CONSOLE_IDLE_SECS ({}) must not exceed LEADQ_CONSOLE_MAX_SECS ({})",
            idle.as_secs(),
            max_age.as_secs()
        ));
    }
    let grafana_url = r
        .get("LEADQ_GRAFANA_URL")
        .map(|u| u.trim_end_matches('/').to_owned());
    if let Some(u) = &grafana_url {
        let ok = (u.starts_with("https://") || u.starts_with("http://"))
            && u.len() <= 2048
            && u.bytes()
                .all(|b| b.is_ascii_graphic() && !b"\"'<>`".contains(&b));
        if !ok {
            r.problems.push(
                "LEADQ_GRAFANA_URL must be an http(s) URL such as https://grafana.example.com"
                    .into(),
            );
        }
    }
    ConsoleSettings {
        idle,
        max_age,
        grafana_url,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::config::{Needs, Settings};

    fn load(extra: &[(&str, &str)]) -> Result<Settings, Vec<String>> {
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in extra {
            vars.insert((*k).into(), (*v).into());
        }
        Settings::load(
            &vars,
            Needs {
                database: false,
                redis: false,
                keys: false,
            },
            &[],
        )
        .map_err(|e| e.problems)
    }

    #[test]
    fn defaults_and_problems() {
        let s = load(&[]).unwrap();
        assert_eq!(s.console.idle.as_secs(), 1800);
        assert_eq!(s.console.max_age.as_secs(), 43_200);
        assert!(s.console.grafana_url.is_none());
        let problems = load(&[
            ("LEADQ_CONSOLE_IDLE_SECS", "100"),
            ("LEADQ_CONSOLE_MAX_SECS", "50"),
            ("LEADQ_GRAFANA_URL", "javascript:alert(1)"),
        ])
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        let s = load(&[("LEADQ_GRAFANA_URL", "https://grafana.example.com/")]).unwrap();
        assert_eq!(
            s.console.grafana_url.as_deref(),
            Some("https://grafana.example.com")
        );
    }
}
