//! The built-in rules: what each one matches, in which order they apply, and the functions
//! that decide a match's replacement (or keep it, when a candidate is not a secret after all).

use base64::Engine;
use regex::{Captures, Regex};
use sentry::protocol::Value;

use super::*;

#[derive(Clone)]
pub(super) struct Rule {
    pub(super) re: Regex,
    pub(super) replace: Replace,
}

/// How a rule rewrites one match.
#[derive(Clone, Copy)]
pub(super) enum Replace {
    /// Every match becomes this text.
    Fixed(&'static str),
    /// The match becomes what the function returns; `None` keeps it (a candidate that turned
    /// out not to be a secret, e.g. a digit group glued to other digits).
    With(fn(&Captures<'_>, &str) -> Option<String>),
}

impl Rule {
    /// The text with every accepted match replaced, or `None` when nothing changed.
    pub(super) fn apply(&self, text: &str) -> Option<String> {
        let mut out: Option<String> = None;
        let mut last = 0;
        let mut put = |start: usize, end: usize, replacement: &str| {
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            o.push_str(&text[last..start]);
            o.push_str(replacement);
            last = end;
        };
        match self.replace {
            Replace::Fixed(replacement) => {
                for m in self.re.find_iter(text) {
                    if !m.is_empty() && m.as_str() != replacement {
                        put(m.start(), m.end(), replacement);
                    }
                }
            }
            Replace::With(f) => {
                for caps in self.re.captures_iter(text) {
                    let Some(m) = caps.get(0) else { continue };
                    if m.is_empty() {
                        continue;
                    }
                    match f(&caps, text) {
                        Some(replacement) if replacement != m.as_str() => {
                            put(m.start(), m.end(), &replacement);
                        }
                        _ => {}
                    }
                }
            }
        }
        let mut out = out?;
        out.push_str(&text[last..]);
        Some(out)
    }
}

// ---------------------------------------------------------------------------------------------
// The built-in rules.
// ---------------------------------------------------------------------------------------------

/// One built-in rule: what it finds and how it rewrites it. The order is the order they apply.
pub(super) struct Builtin {
    pattern: &'static str,
    replace: Replace,
}

pub(super) const BUILTINS: &[Builtin] = &[
    // Secrets by key name: the key *ends* with one of these words (`db_password`,
    // `webhook_secret`, `csrf_token`, `aws_secret_access_key`), case-insensitively. First, so
    // that a value is masked whole (`dsn=https://…`) before the rules below mask pieces of it.
    Builtin {
        pattern: concat!(
            r#"(?i)(?P<key>(?-u:\b)[A-Za-z0-9_\-]*?(?:"#,
            r"password|passwd|passphrase|pwd|secret|token|api[_\-]?key|access[_\-]?key|private[_\-]?key|authorization|cookie|dsn",
            r#"))(?P<close>\\?["']?)"#,
            // `=` or `:`, also with the ANSI colour codes of the pretty log format around it.
            r"(?P<sep>(?:\x1b\[[0-9;]*m)*[ \t]*[:=][ \t]*(?:\x1b\[[0-9;]*m)*)",
            // \"escaped\" inside a JSON string | "quoted" | 'quoted' | bare.
            r#"(?P<value>\\"(?:[^"\\]|\\[^"])*\\"|"(?:[^"\\]|\\.)*"|'[^'\r\n]*'|[^\s&,;"'<>{}\[\]()\\\x1b]+)"#,
        ),
        replace: Replace::With(key_value),
    },
    // Secret query parameters: `?token=…`, `&sig=…`, `&X-Amz-Signature=…`, `?key=…`, `&auth=…`.
    Builtin {
        pattern: r#"(?i)(?P<lead>[?&])(?P<key>[A-Za-z0-9_.\-]*?(?:signature|sig|key|auth|token|secret|password|passwd|pwd|credential))=(?P<value>[^&#\s"'<>\\\[]+)"#,
        replace: Replace::With(query_param),
    },
    // Credentials in URLs (`scheme://user:pass@host`) and Sentry DSN keys (`https://key@host`).
    // The password may hold an unescaped `@`: it runs to the last `@` before the path.
    Builtin {
        pattern: r#"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]{0,15}://)(?P<user>[^:/?#@\s"'<>\\]*)(?::(?P<pass>[^/?#\s"'<>\\]*))?@"#,
        replace: Replace::With(url_credentials),
    },
    // `Authorization: Bearer …`, `bearer …`, `Basic …`.
    Builtin {
        pattern: r#"(?i)(?P<prefix>(?-u:\b)(?:proxy-)?authorization\\?["']?[ \t]*[:=][ \t]*\\?["']?[ \t]*)?(?-u:\b)(?P<scheme>bearer|basic)[ \t]+(?P<token>[A-Za-z0-9\-._~+/]+=*)"#,
        replace: Replace::With(authorization),
    },
    // leadq API keys.
    Builtin {
        pattern: r"lq_[0-9a-fA-F]{12}_[0-9a-fA-F]{64}",
        replace: Replace::With(leadq_key),
    },
    // AWS access key ids (long-term AKIA, temporary ASIA).
    Builtin {
        pattern: r"(?:AKIA|ASIA)[A-Z0-9]{16}",
        replace: Replace::With(aws_key_id),
    },
    // Telegram bot tokens (`bot<id>:<35>` in API URLs too).
    Builtin {
        pattern: r"[0-9]{8,10}:[A-Za-z0-9_\-]{35}",
        replace: Replace::With(telegram_token),
    },
    // Email addresses.
    Builtin {
        pattern: r"[A-Za-z0-9._%+\-]+@(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,}",
        replace: Replace::With(email),
    },
    // Phone numbers, by shape; the longest shapes first (at one position the first wins).
    Builtin {
        pattern: concat!(
            // +7 912 345 67 89, +1 (555) 123-4567, +44 20 7946 0958, +79123456789
            r"\+[0-9]{1,3}(?:[ .\-]?\([0-9]{1,5}\)|[ .\-]?[0-9]{1,5}){1,6}",
            // (555) 123-4567, 8 (912) 345-67-89, 1 (555) 123 4567
            r"|(?:[0-9]{1,3}[ .\-]?)?\([0-9]{2,5}\)[ .\-]?[0-9]{2,4}(?:[ .\-]?[0-9]{2,4}){1,3}",
            // 8 912 345-67-89, 1-555-123-4567
            r"|[0-9]{1,2}[ .\-][0-9]{3}[ .\-][0-9]{3}(?:[ .\-][0-9]{2}[ .\-][0-9]{2}|[ .\-][0-9]{4})",
            // 912 345-67-89
            r"|[0-9]{3}[ .\-][0-9]{3}[ .\-][0-9]{2}[ .\-][0-9]{2}",
            // 020 7946 0958, 01632 960 983
            r"|0[0-9]{2,4}[ \-][0-9]{3,4}[ \-][0-9]{3,4}",
            // 555-123-4567, 555.123.4567, 555 123 4567
            r"|[0-9]{3}[ .\-][0-9]{3}[ .\-][0-9]{4}",
            // 06 12 34 56 78
            r"|0[0-9](?:[ .\-][0-9]{2}){4}",
        ),
        replace: Replace::With(phone),
    },
];

pub(super) static BUILTIN_RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    BUILTINS
        .iter()
        .map(|b| Rule {
            re: Regex::new(b.pattern).expect("built-in scrub patterns compile"),
            replace: b.replace,
        })
        .collect()
});

pub(super) fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether the byte at `i` is escaped, i.e. preceded by an odd number of backslashes.
pub(super) fn is_escaped(bytes: &[u8], i: usize) -> bool {
    bytes[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

/// Whether a token starting at `start` stands on its own on the left: at the start, after a
/// non-word byte, or right after a JSON escape such as `\n` (a log line is JSON).
pub(super) fn free_before(text: &str, start: usize) -> bool {
    let bytes = text.as_bytes();
    match start.checked_sub(1).map(|i| (i, bytes[i])) {
        None => true,
        Some((_, b)) if !is_word_byte(b) => true,
        Some((i, b)) => matches!(b, b'n' | b'r' | b't') && is_escaped(bytes, i),
    }
}

/// Whether a token ending at `end` stands on its own on the right.
pub(super) fn free_after(text: &str, end: usize) -> bool {
    text.as_bytes().get(end).is_none_or(|&b| !is_word_byte(b))
}

pub(super) fn whole(c: &Captures<'_>) -> (usize, usize) {
    c.get(0).map_or((0, 0), |m| (m.start(), m.end()))
}

/// `password=…`, `"token":"…"`, `\"secret\":\"…\"`, `client_secret: "…"`: masks the value,
/// keeps the key, separator and quotes.
pub(super) fn key_value(c: &Captures<'_>, _: &str) -> Option<String> {
    let key = &c["key"];
    let close = &c["close"];
    let sep = &c["sep"];
    let value = &c["value"];
    let (open, inner, end) = split_quotes(value);
    if inner.is_empty() || inner == REDACTED {
        return None;
    }
    if open.is_empty() {
        let lower = inner.to_ascii_lowercase();
        // JSON literals hide nothing; `authorization=Bearer x` is the next rule's.
        if matches!(
            lower.as_str(),
            "null" | "true" | "false" | "none" | "bearer" | "basic"
        ) {
            return None;
        }
        // `token: expired` in prose is not a secret; `"token": x`, `db_password: x` and
        // `password: x` are. An unquoted key with `:` and a bare value counts only when the
        // key is compound or names a password or cookie.
        if sep.contains(':') && close.is_empty() {
            let k = key.to_ascii_lowercase();
            let compound = k.contains('_') || k.contains('-');
            let strong = ["password", "passwd", "passphrase", "pwd", "cookie"]
                .iter()
                .any(|s| k.ends_with(s));
            if !compound && !strong {
                return None;
            }
        }
    }
    Some(format!("{key}{close}{sep}{open}{REDACTED}{end}"))
}

/// Splits a value into (opening quote, content, closing quote); quotes may be `\"`, `"`, `'`
/// or nothing.
pub(super) fn split_quotes(value: &str) -> (&str, &str, &str) {
    for q in ["\\\"", "\"", "'"] {
        if value.len() >= 2 * q.len() && value.starts_with(q) && value.ends_with(q) {
            return (q, &value[q.len()..value.len() - q.len()], q);
        }
    }
    ("", value, "")
}

pub(super) fn query_param(c: &Captures<'_>, _: &str) -> Option<String> {
    Some(format!("{}{}={REDACTED}", &c["lead"], &c["key"]))
}

pub(super) fn is_sentry_key(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(super) fn url_credentials(c: &Captures<'_>, _: &str) -> Option<String> {
    let scheme = &c["scheme"];
    let user = c.name("user").map_or("", |m| m.as_str());
    if is_sentry_key(user) {
        return Some(format!("{scheme}{REDACTED}@"));
    }
    match c.name("pass").map(|m| m.as_str()) {
        Some(pass) if !pass.is_empty() => Some(format!("{scheme}{user}:{REDACTED}@")),
        _ => None,
    }
}

/// `Authorization: <scheme> x` is always masked. Without the header name, `Basic x` counts
/// when `x` decodes to `user:password`, and `Bearer x` when `x` looks like a token rather than
/// a word (`missing bearer token`, `expected Bearer credentials` stay readable).
pub(super) fn authorization(c: &Captures<'_>, _: &str) -> Option<String> {
    let prefix = c.name("prefix").map_or("", |m| m.as_str());
    let token = &c["token"];
    let basic = c["scheme"].eq_ignore_ascii_case("basic");
    let plausible = !prefix.is_empty()
        || if basic {
            decodes_to_credentials(token)
        } else {
            looks_like_token(token)
        };
    if !plausible {
        return None;
    }
    let scheme = if basic { "Basic" } else { "Bearer" };
    Some(format!("{prefix}{scheme} {REDACTED}"))
}

pub(super) fn decodes_to_credentials(token: &str) -> bool {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    STANDARD
        .decode(token)
        .or_else(|_| STANDARD_NO_PAD.decode(token))
        .is_ok_and(|bytes| bytes.contains(&b':'))
}

pub(super) fn looks_like_token(token: &str) -> bool {
    let bytes = token.as_bytes();
    bytes.len() >= 20
        || (bytes.len() >= 8
            && (bytes.iter().any(|b| !b.is_ascii_alphabetic())
                || bytes[1..].iter().any(u8::is_ascii_uppercase)))
}

pub(super) fn leadq_key(c: &Captures<'_>, text: &str) -> Option<String> {
    let (s, e) = whole(c);
    (free_before(text, s) && free_after(text, e)).then(|| LEADQ_KEY.to_owned())
}

pub(super) fn aws_key_id(c: &Captures<'_>, text: &str) -> Option<String> {
    let (s, e) = whole(c);
    (free_before(text, s) && free_after(text, e)).then(|| AWS_KEY.to_owned())
}

/// The bot id may follow letters (`/bot123…:…` in API URLs) but not digits.
pub(super) fn telegram_token(c: &Captures<'_>, text: &str) -> Option<String> {
    let (s, e) = whole(c);
    let bytes = text.as_bytes();
    let before_ok = s == 0 || !bytes[s - 1].is_ascii_digit();
    let after_ok = bytes
        .get(e)
        .is_none_or(|&b| !(is_word_byte(b) || b == b'-'));
    (before_ok && after_ok).then(|| TELEGRAM_TOKEN.to_owned())
}

pub(super) fn email(c: &Captures<'_>, text: &str) -> Option<String> {
    let (s, _) = whole(c);
    // `ssh://git@host`: a URL's user name, not an address.
    if text[..s].ends_with("://") {
        return None;
    }
    // `\nada@…` inside a JSON string: keep the escape whole (`\u00e9` is 5 bytes long).
    let bytes = text.as_bytes();
    let keep = if s > 0 && bytes[s - 1] == b'\\' && is_escaped(bytes, s) {
        if bytes[s] == b'u' {
            5
        } else {
            1
        }
    } else {
        0
    };
    let matched = &c[0];
    if keep >= matched.find('@').unwrap_or(0) {
        return None;
    }
    Some(format!("{}{EMAIL}", &matched[..keep]))
}

/// Accepts a phone-shaped candidate when it has 7 to 15 digits and is not glued to other
/// digits, letters, or a dotted/dashed/colon chain of numbers (versions, dates, IPs, times).
pub(super) fn phone(c: &Captures<'_>, text: &str) -> Option<String> {
    let (s, e) = whole(c);
    let digits = c[0].bytes().filter(u8::is_ascii_digit).count();
    if !(7..=15).contains(&digits) || !free_before(text, s) || !free_after(text, e) {
        return None;
    }
    let bytes = text.as_bytes();
    let chain = |sep: Option<&u8>, digit: Option<&u8>| {
        matches!(sep, Some(b'.' | b'-' | b':' | b'/' | b'+'))
            && digit.is_some_and(u8::is_ascii_digit)
    };
    if s > 0 && bytes[s - 1] == b'+' {
        return None;
    }
    if s > 0
        && chain(
            bytes.get(s - 1),
            s.checked_sub(2).and_then(|i| bytes.get(i)),
        )
    {
        return None;
    }
    if chain(bytes.get(e), bytes.get(e + 1)) {
        return None;
    }
    Some(PHONE.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Sensitive key names (JSON, headers, tags).
// ---------------------------------------------------------------------------------------------

/// Key names that are sensitive wherever they appear in the name (`x-api-key`,
/// `client_secret`, `set-cookie`, `phoneNumber`), compared with separators removed.
pub(super) const SENSITIVE_INFIXES: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "apikey",
    "accesskey",
    "privatekey",
    "authorization",
    "cookie",
    "credential",
    "sessionid",
    "signature",
    "phone",
    "email",
];

/// Key names that are sensitive as one word of the name (`access_token`, `accessToken`,
/// `sentry_dsn`, `auth`), not inside another word (`tokens_used`, `author`).
pub(super) const SENSITIVE_WORDS: &[&str] = &[
    "token", "pwd", "pass", "dsn", "jwt", "otp", "auth", "sig", "msisdn", "mobile",
];

/// Whether a JSON key, header name or tag name names a secret or personal data, so that its
/// whole value is redacted (case-insensitive; `-`, `_`, `.` and camelCase separate words).
pub fn is_sensitive_key(key: &str) -> bool {
    let words = key_words(key);
    let joined = words.concat();
    SENSITIVE_INFIXES.iter().any(|s| joined.contains(s))
        || joined.ends_with("token")
        || words.iter().any(|w| SENSITIVE_WORDS.contains(&w.as_str()))
}

/// `X-Api-Key` → `[x, api, key]`; `accessToken` → `[access, token]`; `APIKey` → `[apikey]`.
pub(super) fn key_words(key: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut prev_lower_or_digit = false;
    for ch in key.chars() {
        if !ch.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            prev_lower_or_digit = false;
            continue;
        }
        if ch.is_uppercase() && prev_lower_or_digit && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        prev_lower_or_digit = ch.is_lowercase() || ch.is_ascii_digit();
        current.extend(ch.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

pub(super) fn is_ip_header(name: &str) -> bool {
    [
        "x-forwarded-for",
        "x-real-ip",
        "forwarded",
        "cf-connecting-ip",
        "true-client-ip",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// The value of a sensitive key: `"[redacted]"`, except `null` and booleans, which hide nothing.
pub(super) fn redact_value(v: &mut Value) {
    if !matches!(v, Value::Null | Value::Bool(_)) {
        *v = Value::String(REDACTED.to_owned());
    }
}
