//! Where a run's CPU goes, from `/proc` (Linux): the CPU time of the processes the bench
//! started, of the bench itself, and of the whole machine, so the e2e mode can say how many
//! milliseconds of CPU a lead costs in each and what is left for PostgreSQL and Redis.
//!
//! `/proc` reports in clock ticks of `USER_HZ`, which Linux fixes at 100 for user space on
//! every architecture it exposes `/proc/<pid>/stat` on.

use super::r3;

const USER_HZ: f64 = 100.0;

/// User + system CPU seconds of process `pid` so far (`None` when it cannot be read).
pub(super) fn process_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: f64 = f.next()?.parse().ok()?;
    let stime: f64 = f.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// The machine's busy and total CPU seconds so far, summed over its CPUs (`/proc/stat`).
pub(super) fn machine_s() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let idle = v.get(3)? + v.get(4)?;
    let total: f64 = v.iter().sum();
    Some(((total - idle) / USER_HZ, total / USER_HZ))
}

/// One reading of everything [`usage`] compares.
#[derive(Debug, Clone)]
pub(super) struct Reading {
    children: Vec<(&'static str, Option<f64>)>,
    bench: Option<f64>,
    machine: Option<(f64, f64)>,
}

pub(super) fn read(children: &[(&'static str, Option<u32>)]) -> Reading {
    Reading {
        children: children
            .iter()
            .map(|(role, pid)| (*role, pid.and_then(process_s)))
            .collect(),
        bench: process_s(std::process::id()),
        machine: machine_s(),
    }
}

/// CPU ms per item between two readings: each child's, the bench's, the rest of the machine's
/// (PostgreSQL, Redis, anything else running), the machine's, and how busy the machine was.
pub(super) fn usage(before: &Reading, after: &Reading, items: usize) -> serde_json::Value {
    let per = |s: f64| r3(s * 1000.0 / items.max(1) as f64);
    let mut out = serde_json::Map::new();
    let mut known = 0.0;
    for ((role, a), (_, b)) in before.children.iter().zip(&after.children) {
        if let (Some(a), Some(b)) = (a, b) {
            known += b - a;
            out.insert((*role).into(), per(b - a).into());
        }
    }
    if let (Some(a), Some(b)) = (before.bench, after.bench) {
        known += b - a;
        out.insert("bench".into(), per(b - a).into());
    }
    if let (Some((b0, t0)), Some((b1, t1))) = (before.machine, after.machine) {
        out.insert("rest".into(), per((b1 - b0) - known).into());
        out.insert("machine".into(), per(b1 - b0).into());
        if t1 > t0 {
            out.insert(
                "machine_busy_share".into(),
                r3((b1 - b0) / (t1 - t0)).into(),
            );
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_and_the_machine_are_read_and_a_busy_loop_shows() {
        let me = [("self", Some(std::process::id()))];
        let before = read(&me);
        // Busy until this process has had 200 ms of CPU by its own reading (on a machine busy
        // with other work, 300 ms of wall time gave it 190 ms once), or 20 s have passed.
        let t = std::time::Instant::now();
        let mut x = 0u64;
        let mut u = usage(&before, &read(&me), 1);
        while u["self"].as_f64().unwrap_or(0.0) < 200.0
            && t.elapsed() < std::time::Duration::from_secs(20)
        {
            let slice = std::time::Instant::now();
            while slice.elapsed() < std::time::Duration::from_millis(20) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            u = usage(&before, &read(&me), 1);
        }
        // The busy loop shows: at least 200 ms of CPU on this process, and on the machine.
        assert!(u["self"].as_f64().unwrap() >= 200.0, "{u}");
        assert!(u["machine"].as_f64().unwrap() >= 200.0, "{u}");
        assert!(u["machine_busy_share"].as_f64().unwrap() > 0.0, "{u}");
    }
}
