//! Cron expressions as operators write them (`LEADQ_SCHEDULE_<NAME>`), in UTC.
//!
//! The `cron` crate reads five- and six-field expressions, but numbers the days of the week
//! 1-7 from Sunday, where every other cron numbers them 0-7 from Sunday (0 and 7 both Sunday,
//! 1 Monday): `17 3 * * 1-5` ran Sunday to Thursday, `0` was refused and `7` meant Saturday.
//! [`parse_cron`] reads the day-of-week field the standard way and hands the crate the days
//! by name, so an expression means what crontab(5) says it does.

use std::collections::BTreeSet;

/// Day names in standard cron's numbering (0 = Sunday), as the crate reads them.
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Parses a cron expression: five fields (minute hour day-of-month month day-of-week), or six
/// with seconds first; UTC. Days of the week are 0-7 (0 and 7 Sunday) or names, with lists,
/// ranges and steps (`1-5`, `MON-FRI`, `*/2`, `5-7`).
pub fn parse_cron(pattern: &str) -> Result<cron::Schedule, String> {
    use std::str::FromStr as _;
    let mut fields: Vec<String> = pattern.split_whitespace().map(str::to_owned).collect();
    match fields.len() {
        5 => fields.insert(0, "0".to_owned()),
        6 => {}
        n => return Err(format!("{n} fields (expected 5, or 6 with seconds first)")),
    }
    fields[5] = days_of_week(&fields[5])?;
    cron::Schedule::from_str(&fields.join(" ")).map_err(|e| e.to_string())
}

/// A standard day-of-week field as the crate's list of day names (`*` and `?` stay).
fn days_of_week(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_owned());
    }
    let bad = || format!("day of week {field:?} is not 0-7 (0 and 7: Sunday) or SUN-SAT");
    let day = |s: &str| -> Result<usize, String> {
        if let Ok(n) = s.parse::<usize>() {
            return if n <= 7 { Ok(n % 7) } else { Err(bad()) };
        }
        DAYS.iter()
            .position(|d| d.eq_ignore_ascii_case(s))
            .ok_or_else(bad)
    };
    let mut days = BTreeSet::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<usize>().ok().filter(|s| *s > 0).ok_or_else(bad)?,
            ),
            None => (item, 1),
        };
        let (from, to) = match range.split_once('-') {
            _ if range == "*" => (0, 6),
            // 7 may end a range (`5-7`: Friday to Sunday), never start one (it read as 0, so
            // `7-1` was Sunday and Monday, `7-7` every day).
            Some(("7", _)) => return Err(bad()),
            Some((a, b)) => (day(a)?, if b == "7" { 7 } else { day(b)? }),
            // `a/step` runs from a to the end of the week.
            None if step > 1 => (day(range)?, 6),
            None => (day(range)?, day(range)?),
        };
        if from > to {
            return Err(bad());
        }
        days.extend((from..=to).step_by(step).map(|d| d % 7));
    }
    Ok(days
        .into_iter()
        .map(|d| DAYS[d])
        .collect::<Vec<_>>()
        .join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone as _, Weekday};

    /// The weekdays an expression fires on over a week from a Monday.
    fn fires_on(pattern: &str) -> Vec<Weekday> {
        let monday = chrono::Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap();
        let mut days: Vec<Weekday> = parse_cron(pattern)
            .unwrap()
            .after(&monday)
            .take_while(|t| *t < monday + chrono::Duration::days(7))
            .map(|t| t.weekday())
            .collect();
        days.dedup();
        days
    }

    #[test]
    fn days_of_week_are_numbered_as_in_crontab() {
        use Weekday::*;
        assert_eq!(fires_on("17 3 * * 1-5"), [Mon, Tue, Wed, Thu, Fri]);
        assert_eq!(fires_on("17 3 * * MON-FRI"), [Mon, Tue, Wed, Thu, Fri]);
        assert_eq!(fires_on("17 3 * * 0"), [Sun]);
        assert_eq!(fires_on("17 3 * * 7"), [Sun]);
        assert_eq!(fires_on("17 3 * * 5-7"), [Fri, Sat, Sun]);
        assert_eq!(fires_on("17 3 * * 1,3"), [Mon, Wed]);
        assert_eq!(fires_on("17 3 * * */2"), [Tue, Thu, Sat, Sun]);
        assert_eq!(fires_on("17 3 * * 1/2"), [Mon, Wed, Fri]);
        assert_eq!(fires_on("17 3 * * *").len(), 7);
        for bad in [
            "17 3 * * 8",
            "17 3 * * 5-2",
            "17 3 * * FUN",
            "17 3 * * */0",
            "17 3 * * 1-",
            "17 3 * * 7-7",
            "17 3 * * 7-1",
        ] {
            assert!(parse_cron(bad).is_err(), "{bad}");
        }
    }
}
