//! Telegram HTML: escaping, the alert and digest layouts, and the 4,096-character cap.
//!
//! Messages use `parse_mode: HTML`. Every piece of text we did not write is escaped (`&`, `<`,
//! `>`, `"`), so the only tags are ours (`b`, `i`, `code`, `pre`). Telegram refuses a text
//! over 4,096 characters (counted in UTF-16 code units, as its clients do): [`truncate`]
//! cuts at a token boundary (never inside a tag or an entity), closes the tags still open and
//! appends [`TRUNCATED`]. Every message names the environment and the process.

use std::time::Duration;

use leadq_queue::alert_state::{DigestLine, OTHER_FIELD};

use crate::alert::{Alert, Severity};

/// Telegram's limit on a message's text.
pub const MAX_MESSAGE: usize = 4096;
/// What ends a truncated message.
pub const TRUNCATED: &str = "\n… [truncated]";

/// Where a message comes from: in every message.
#[derive(Debug, Clone)]
pub struct Origin {
    /// `LEADQ_ENVIRONMENT`.
    pub environment: String,
    /// `leadq-api` or `leadq-worker`.
    pub process: String,
}

/// Escapes text for Telegram's HTML mode.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

fn header(icon: &str, label: &str, origin: &Origin) -> String {
    format!(
        "{icon} <b>{label}</b> · <b>{}</b> · {}\n",
        escape(&origin.environment),
        escape(&origin.process)
    )
}

/// One alert (already scrubbed), as its immediate message.
pub fn alert(a: &Alert, fingerprint: &str, origin: &Origin) -> String {
    let (icon, label) = match a.severity {
        Severity::Critical => ("🔴", "CRITICAL"),
        Severity::NonCritical => ("🟡", "ERROR"),
    };
    let mut out = header(icon, label, origin);
    out.push_str(&format!("<b>{}</b>\n", escape(&a.title)));
    let code = a
        .code
        .as_deref()
        .map(|c| format!(" / {c}"))
        .unwrap_or_default();
    out.push_str(&format!(
        "kind: <code>{}</code>\n",
        escape(&format!("{}{code}", a.kind))
    ));
    if let Some(path) = &a.path {
        out.push_str(&format!("route: <code>{}</code>\n", escape(path)));
    }
    for (name, value) in &a.fields {
        out.push_str(&format!(
            "{}: <code>{}</code>\n",
            escape(name),
            escape(value)
        ));
    }
    if !a.causes.is_empty() {
        out.push_str(&format!("<pre>{}</pre>\n", escape(&a.causes.join("\n"))));
    }
    out.push_str(&format!("<i>fingerprint {fingerprint}</i>"));
    truncate(&out, MAX_MESSAGE)
}

fn window(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 120 && s % 60 == 0 {
        format!("{} min", s / 60)
    } else if s >= 1 {
        format!("{s} s")
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// The digest of one window: each line with its count, most frequent first.
pub fn digest(lines: &[DigestLine], batch_window: Duration, origin: &Origin) -> String {
    let total: u64 = lines.iter().map(|l| l.count).sum();
    let mut out = header("🟡", "Digest", origin);
    out.push_str(&format!(
        "{total} alert(s), {} distinct, in the last {}\n",
        lines.len(),
        window(batch_window)
    ));
    for l in lines {
        let what = if l.fingerprint == OTHER_FIELD {
            "other alerts (the digest was full)".to_owned()
        } else {
            escape(&l.summary)
        };
        let note = if l.repeat {
            " <i>(repeats of an alert already sent)</i>"
        } else {
            ""
        };
        out.push_str(&format!("• <b>×{}</b> {what}{note}\n", l.count));
    }
    truncate(out.trim_end(), MAX_MESSAGE)
}

fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// The next token of `html`: a whole tag, a whole entity, or one character.
fn token(html: &str) -> &str {
    let first = html.chars().next().map_or(0, char::len_utf8);
    let end = match html.as_bytes()[0] {
        b'<' => html.find('>').map(|i| i + 1),
        b'&' => html.bytes().take(12).position(|b| b == b';').map(|i| i + 1),
        _ => None,
    };
    &html[..end.unwrap_or(first)]
}

/// The name of a tag token and whether it closes (`</b>` → `("b", true)`).
fn tag(tok: &str) -> Option<(&str, bool)> {
    let inner = tok.strip_prefix('<')?.strip_suffix('>')?;
    let (closing, inner) = match inner.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (false, inner),
    };
    let name = inner.split(|c: char| c.is_whitespace()).next()?;
    Some((name, closing))
}

fn closing_len(stack: &[&str]) -> usize {
    stack.iter().map(|n| n.len() + 3).sum()
}

/// `html` if it fits in `max` characters (UTF-16 units); otherwise its longest prefix that
/// ends between tokens, the tags still open closed in order, and [`TRUNCATED`]. The result is
/// at most `max` long and as well-formed as the input.
pub fn truncate(html: &str, max: usize) -> String {
    if utf16_len(html) <= max {
        return html.to_owned();
    }
    let budget = max.saturating_sub(utf16_len(TRUNCATED));
    let mut out = String::new();
    let mut used = 0;
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = html;
    while !rest.is_empty() {
        let tok = token(rest);
        let mut next = stack.clone();
        match tag(tok) {
            Some((name, false)) => next.push(name),
            Some((name, true)) => {
                if let Some(i) = next.iter().rposition(|n| *n == name) {
                    next.truncate(i);
                }
            }
            None => {}
        }
        let len = utf16_len(tok);
        if used + len + closing_len(&next) > budget {
            break;
        }
        out.push_str(tok);
        used += len;
        stack = next;
        rest = &rest[tok.len()..];
    }
    for name in stack.iter().rev() {
        out.push_str(&format!("</{name}>"));
    }
    out.push_str(TRUNCATED);
    out
}

/// The text of `html` without tags, entities decoded: what is sent when Telegram cannot
/// parse our HTML (it should never happen; the message still gets through).
pub fn to_plain(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while !rest.is_empty() {
        let tok = token(rest);
        match tok {
            "&amp;" => out.push('&'),
            "&lt;" => out.push('<'),
            "&gt;" => out.push('>'),
            "&quot;" => out.push('"'),
            t if tag(t).is_some() => {}
            t => out.push_str(t),
        }
        rest = &rest[tok.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tags balanced and properly nested; every `&` starts a known entity; no stray `<`/`>`.
    pub(crate) fn well_formed(html: &str) -> bool {
        let mut stack = Vec::new();
        let mut rest = html;
        while !rest.is_empty() {
            let tok = token(rest);
            if let Some((name, closing)) = tag(tok) {
                if closing {
                    if stack.pop() != Some(name.to_owned()) {
                        return false;
                    }
                } else {
                    stack.push(name.to_owned());
                }
            } else if tok.starts_with('&') && !["&amp;", "&lt;", "&gt;", "&quot;"].contains(&tok)
                || tok == "<"
                || tok == ">"
            {
                return false;
            }
            rest = &rest[tok.len()..];
        }
        stack.is_empty()
    }

    fn origin() -> Origin {
        Origin {
            environment: "staging".into(),
            process: "leadq-api".into(),
        }
    }

    #[test]
    fn text_is_escaped_and_the_environment_named() {
        let a = Alert::new(Severity::Critical, "internal", "a <b> & \"c\"")
            .field("route", "/v1/<x>")
            .cause("x < y");
        let html = alert(&a, "0123", &origin());
        assert!(html.starts_with("🔴 <b>CRITICAL</b> · <b>staging</b> · leadq-api\n"));
        assert!(html.contains("<b>a &lt;b&gt; &amp; &quot;c&quot;</b>"));
        assert!(html.contains("<pre>x &lt; y</pre>"));
        assert!(well_formed(&html), "{html}");
        assert_eq!(to_plain("<b>a &lt;b&gt;</b> &amp;"), "a <b> &");
    }

    #[test]
    fn truncation_never_splits_a_tag_or_an_entity_and_closes_what_is_open() {
        let body = "&lt;&amp;é😀x".repeat(600);
        let html = format!("<b>t</b>\n<pre>{body}</pre>\n<i>end</i>");
        for max in [40, 41, 42, 43, 44, 100, 1000, MAX_MESSAGE] {
            let cut = truncate(&html, max);
            assert!(utf16_len(&cut) <= max, "{max}: {}", utf16_len(&cut));
            assert!(cut.ends_with(TRUNCATED), "{cut}");
            assert!(well_formed(&cut), "{max}: {cut}");
        }
        let cut = truncate(&html, 100);
        assert!(cut.contains("</pre>"), "{cut}");
        assert_eq!(truncate("<b>short</b>", 100), "<b>short</b>");
    }

    #[test]
    fn a_digest_lists_each_line_with_its_count() {
        let lines = vec![
            DigestLine {
                fingerprint: "a".into(),
                count: 49,
                repeat: true,
                summary: "Redis down <x>".into(),
            },
            DigestLine {
                fingerprint: "b".into(),
                count: 2,
                repeat: false,
                summary: "crm failed".into(),
            },
        ];
        let html = digest(&lines, Duration::from_secs(900), &origin());
        assert!(
            html.contains("51 alert(s), 2 distinct, in the last 15 min"),
            "{html}"
        );
        assert!(
            html.contains("• <b>×49</b> Redis down &lt;x&gt; <i>(repeats"),
            "{html}"
        );
        assert!(html.contains("• <b>×2</b> crm failed"), "{html}");
        assert!(well_formed(&html));
    }
}
