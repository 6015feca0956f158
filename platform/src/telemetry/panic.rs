//! A panic, on stderr, as one scrubbed log line.
//!
//! Rust's default hook writes `thread '…' panicked at …: <message>` to stderr as it is: not a
//! log line (a shipper reading JSON lines mangles or drops it) and not through the scrubber, so
//! a panic message that formats a value holding a secret (a URL with its password, a header)
//! would reach the logs in clear while every other line is masked. [`log_panics`] replaces it
//! with the same facts — thread, place, message, a backtrace when `RUST_BACKTRACE` asks for
//! one — as one line in the log format, scrubbed. Sentry's and the Telegram alert's hooks,
//! installed after it, run first and call it; each scrubs what it sends itself.

use std::io::Write;
use std::sync::OnceLock;

use crate::config::LogFormat;

/// The format the process logs in, once its subscriber is installed (JSON until then).
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Remembers the log format for panic lines (the subscriber's, set when it is installed).
pub(super) fn set_format(format: LogFormat) {
    let _ = FORMAT.set(format);
}

/// Replaces the default panic hook with one that writes each panic as a scrubbed log line on
/// stderr. Call it first thing in `main`: hooks installed later (Sentry's, the alerts') call it.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let line = panic_line(info, *FORMAT.get().unwrap_or(&LogFormat::Json));
        // One write of the whole line; a failing stderr has nowhere else to go.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }));
}

/// The panic as one log line (with its newline), scrubbed by the process-wide scrubber.
pub fn panic_line(info: &std::panic::PanicHookInfo<'_>, format: LogFormat) -> String {
    let message = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "Box<dyn Any>".to_owned());
    let place = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_default();
    let thread = std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_owned();
    let backtrace = std::backtrace::Backtrace::capture();
    let backtrace = match backtrace.status() {
        std::backtrace::BacktraceStatus::Captured => Some(backtrace.to_string()),
        _ => None,
    };
    let scrubber = crate::scrub::global();
    let mut line = match format {
        LogFormat::Json => {
            let mut v = serde_json::json!({
                "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "level": "ERROR",
                "target": "panic",
                "message": format!("thread '{thread}' panicked at {place}: {message}"),
                "thread": thread,
                "location": place,
            });
            if let Some(b) = backtrace {
                v["backtrace"] = b.into();
            }
            scrubber.scrub_json(&mut v);
            v.to_string()
        }
        LogFormat::Pretty => {
            let mut s = format!("ERROR panic: thread '{thread}' panicked at {place}:\n{message}");
            if let Some(b) = backtrace {
                s.push('\n');
                s.push_str(&b);
            }
            scrubber.scrub(&s).into_owned()
        }
    };
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a thread under a hook that keeps [`panic_line`]'s output, and returns it.
    fn line_of(format: LogFormat, f: impl FnOnce() + Send + 'static) -> String {
        // The hook is the process's: one test at a time swaps it.
        static SWAPPING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = SWAPPING.lock().unwrap_or_else(|e| e.into_inner());
        let kept = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let k = kept.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            *k.lock().unwrap() = panic_line(info, format);
        }));
        let joined = std::thread::Builder::new()
            .name("panicking".into())
            .spawn(f)
            .unwrap()
            .join();
        std::panic::set_hook(previous);
        assert!(joined.is_err(), "the thread panicked");
        let line = kept.lock().unwrap().clone();
        line
    }

    #[test]
    fn a_panic_is_one_scrubbed_json_line_naming_its_thread_and_place() {
        let line = line_of(LogFormat::Json, || {
            let url = "postgres://leadq:Pl4nt3dPassw0rd@db:5432/leadq";
            panic!("cannot reach {url}");
        });
        assert!(
            line.ends_with('\n') && line.trim_end().lines().count() == 1,
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["thread"], "panicking");
        assert!(v["location"].as_str().unwrap().contains("panic.rs"), "{v}");
        let message = v["message"].as_str().unwrap();
        assert!(
            message.starts_with("thread 'panicking' panicked at "),
            "{message}"
        );
        assert!(message.contains("cannot reach postgres://"), "{message}");
        assert!(!line.contains("Pl4nt3dPassw0rd"), "{line}");
    }

    #[test]
    fn a_pretty_panic_line_is_scrubbed_too() {
        let line = line_of(LogFormat::Pretty, || {
            panic!(
                "{}",
                String::from("Authorization: Bearer Pl4nt3dT0ken0123456789")
            )
        });
        assert!(
            line.starts_with("ERROR panic: thread 'panicking' panicked at "),
            "{line}"
        );
        assert!(!line.contains("Pl4nt3dT0ken0123456789"), "{line}");
    }
}
