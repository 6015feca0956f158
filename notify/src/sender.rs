//! The Telegram client: one task per process that sends the messages the policy produced,
//! within Telegram's rules.
//!
//! - `sendMessage` with `parse_mode: HTML` (the text is escaped and capped by `render`).
//! - At most one message per `min_interval` (1 s: Telegram's per-chat limit) and
//!   `per_minute` (20: its limit for groups) from this process.
//! - 429: `parameters.retry_after` is waited out by the whole sender (this task sends
//!   nothing else meanwhile), then the same message is sent again.
//! - 400 with `parameters.migrate_to_chat_id` (a group became a supergroup): logged, and the
//!   new chat id is used from then on. 400 "message is too long": sent again, shorter. 400
//!   "can't parse entities": sent again as plain text.
//! - 403 (bot blocked, kicked, or not a member): nothing more is sent by this process;
//!   `leadq_error_alerts_blocked` becomes 1.
//! - A 5xx or a network error: a few tries with backoff, then counted `failed`.
//!
//! Its own logs use this crate's target, which the alert layer skips (no alert about
//! alerts). A reqwest error names the URL, which holds the bot token: only `without_url()`
//! errors are logged.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use leadq_platform::metrics as m;
use leadq_platform::metrics::alert_outcome as outcome;
use leadq_platform::secret::Secret;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::render;
use crate::Stats;

/// Tries per message (429 waits, migrations and fallbacks included).
const MAX_TRIES: u32 = 6;
/// Per call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest 429 wait honoured; Telegram's are seconds to minutes.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// A message ready to go.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// Telegram HTML, at most 4,096 characters.
    pub(crate) html: String,
}

/// The Telegram side of one process.
pub(crate) struct Telegram {
    pub(crate) http: reqwest::Client,
    pub(crate) api_url: String,
    pub(crate) token: Secret,
    pub(crate) chat_id: String,
    pub(crate) min_interval: Duration,
    pub(crate) per_minute: usize,
    pub(crate) stats: Arc<Stats>,
    /// Send times of the last minute (pacing).
    recent: VecDeque<Instant>,
}

/// What Telegram answered, reduced to what we act on.
enum Answer {
    Ok,
    RetryAfter(Duration),
    Migrated(String),
    TooLong,
    BadEntities,
    Blocked(String),
    Refused(u16, String),
    Unavailable(String),
}

impl Telegram {
    pub(crate) fn new(
        api_url: &str,
        token: Secret,
        chat_id: &str,
        min_interval: Duration,
        per_minute: usize,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            http: reqwest::Client::new(),
            api_url: api_url.trim_end_matches('/').to_owned(),
            token,
            chat_id: chat_id.to_owned(),
            min_interval,
            per_minute: per_minute.max(1),
            stats,
            recent: VecDeque::new(),
        }
    }

    /// Sends every message that arrives, until the channel closes.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Outgoing>) {
        while let Some(msg) = rx.recv().await {
            self.deliver(msg).await;
        }
    }

    /// Waits until one more message keeps within the pacing limits.
    async fn pace(&mut self) {
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.recent.pop_front();
        }
        let mut at = now;
        if let Some(last) = self.recent.back() {
            at = at.max(*last + self.min_interval);
        }
        if self.recent.len() >= self.per_minute {
            at = at.max(self.recent[self.recent.len() - self.per_minute] + Duration::from_secs(60));
        }
        tokio::time::sleep_until(at).await;
        self.recent.push_back(Instant::now());
    }

    async fn deliver(&mut self, msg: Outgoing) {
        if self.stats.blocked.load(Ordering::Relaxed) {
            self.stats.count(outcome::FAILED);
            return;
        }
        let mut text = msg.html;
        let mut html = true;
        let mut limit = render::MAX_MESSAGE;
        for attempt in 0..MAX_TRIES {
            self.pace().await;
            match self.call(&text, html).await {
                Answer::Ok => {
                    self.stats.count(outcome::SENT);
                    return;
                }
                Answer::RetryAfter(wait) => {
                    tracing::warn!(
                        retry_after_secs = wait.as_secs(),
                        "Telegram asked the alert sender to slow down; waiting."
                    );
                    tokio::time::sleep(wait).await;
                }
                Answer::Migrated(chat) => {
                    tracing::warn!(
                        from = %self.chat_id, to = %chat,
                        "The alert chat became a supergroup; sending to its new id. \
                         Update LEADQ_ALERT_TELEGRAM_CHAT_ID."
                    );
                    self.chat_id = chat;
                }
                Answer::TooLong => {
                    limit = limit * 3 / 4;
                    text = if html {
                        render::truncate(&text, limit)
                    } else {
                        plain_cut(&text, limit)
                    };
                }
                Answer::BadEntities if html => {
                    tracing::warn!(
                        "Telegram could not parse an alert's HTML; sending it as plain text."
                    );
                    html = false;
                    text = plain_cut(&render::to_plain(&text), limit);
                }
                Answer::Blocked(why) => {
                    self.stats.blocked.store(true, Ordering::Relaxed);
                    metrics::gauge!(m::ERROR_ALERTS_BLOCKED).set(1.0);
                    tracing::error!(
                        description = %why,
                        "Telegram refused the alert chat (403): no more alerts from this \
                         process until it restarts. Re-add the bot to the chat."
                    );
                    self.stats.count(outcome::FAILED);
                    return;
                }
                Answer::BadEntities => {
                    tracing::warn!(
                        "Telegram could not parse an alert even as plain text; dropping it."
                    );
                    self.stats.count(outcome::FAILED);
                    return;
                }
                Answer::Refused(status, why) => {
                    tracing::warn!(status, description = %why, "Telegram refused an alert; dropping it.");
                    self.stats.count(outcome::FAILED);
                    return;
                }
                Answer::Unavailable(why) => {
                    tracing::warn!(error = %why, attempt, "Telegram unreachable; retrying the alert.");
                    tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(attempt)).await;
                }
            }
        }
        tracing::warn!("Gave up on an alert after several tries.");
        self.stats.count(outcome::FAILED);
    }

    async fn call(&self, text: &str, html: bool) -> Answer {
        let chat: Value = match self.chat_id.parse::<i64>() {
            Ok(id) => json!(id),
            Err(_) => json!(self.chat_id),
        };
        let mut body = json!({
            "chat_id": chat,
            "text": text,
            "link_preview_options": {"is_disabled": true},
        });
        if html {
            body["parse_mode"] = json!("HTML");
        }
        let url = format!("{}/bot{}/sendMessage", self.api_url, self.token.expose());
        let res = self
            .http
            .post(url)
            .timeout(CALL_TIMEOUT)
            .json(&body)
            .send()
            .await;
        let res = match res {
            Ok(r) => r,
            Err(e) => return Answer::Unavailable(e.without_url().to_string()),
        };
        let status = res.status().as_u16();
        let header_wait = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let reply: Value = res.json().await.unwrap_or_default();
        classify(status, &reply, header_wait)
    }
}

/// The first `limit` characters (UTF-16 units) of plain text, with the truncation marker.
fn plain_cut(text: &str, limit: usize) -> String {
    if text.chars().map(char::len_utf16).sum::<usize>() <= limit {
        return text.to_owned();
    }
    let budget = limit.saturating_sub(render::TRUNCATED.chars().map(char::len_utf16).sum());
    let mut used = 0;
    let mut out: String = text
        .chars()
        .take_while(|c| {
            used += c.len_utf16();
            used <= budget
        })
        .collect();
    out.push_str(render::TRUNCATED);
    out
}

/// Reads a Bot API answer (`{"ok": false, "error_code", "description", "parameters"}`).
fn classify(status: u16, reply: &Value, header_wait: Option<u64>) -> Answer {
    if (200..300).contains(&status) && reply["ok"] == true {
        return Answer::Ok;
    }
    let desc = reply["description"].as_str().unwrap_or("").to_owned();
    let params = &reply["parameters"];
    match status {
        429 => {
            let secs = params["retry_after"].as_u64().or(header_wait).unwrap_or(1);
            Answer::RetryAfter(Duration::from_secs(secs.max(1)).min(MAX_RETRY_AFTER))
        }
        400 if params["migrate_to_chat_id"].is_i64() => {
            Answer::Migrated(params["migrate_to_chat_id"].to_string())
        }
        400 if desc.contains("message is too long") => Answer::TooLong,
        400 if desc.contains("can't parse entities") => Answer::BadEntities,
        403 => Answer::Blocked(desc),
        s if s >= 500 || s == 0 => Answer::Unavailable(format!("status {s}")),
        s => Answer::Refused(s, desc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_api_answers_are_read_as_telegram_sends_them() {
        let j = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert!(matches!(
            classify(200, &j(r#"{"ok":true,"result":{"message_id":1}}"#), None),
            Answer::Ok
        ));
        assert!(matches!(
            classify(429, &j(r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#), None),
            Answer::RetryAfter(d) if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            classify(400, &j(r#"{"ok":false,"error_code":400,"description":"Bad Request: group chat was upgraded to a supergroup chat","parameters":{"migrate_to_chat_id":-1001234567890}}"#), None),
            Answer::Migrated(c) if c == "-1001234567890"
        ));
        assert!(matches!(
            classify(
                400,
                &j(
                    r#"{"ok":false,"error_code":400,"description":"Bad Request: message is too long"}"#
                ),
                None
            ),
            Answer::TooLong
        ));
        assert!(matches!(
            classify(
                400,
                &j(
                    r#"{"ok":false,"error_code":400,"description":"Bad Request: can't parse entities: Unsupported start tag \"x\" at byte offset 3"}"#
                ),
                None
            ),
            Answer::BadEntities
        ));
        assert!(matches!(
            classify(
                403,
                &j(
                    r#"{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked by the user"}"#
                ),
                None
            ),
            Answer::Blocked(_)
        ));
        assert!(matches!(
            classify(502, &Value::Null, None),
            Answer::Unavailable(_)
        ));
        assert!(matches!(
            classify(
                400,
                &j(r#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#),
                None
            ),
            Answer::Refused(400, _)
        ));
    }

    #[test]
    fn plain_text_is_cut_with_the_marker() {
        let cut = plain_cut(&"é".repeat(100), 30);
        assert!(cut.ends_with(render::TRUNCATED));
        assert!(cut.chars().count() <= 30);
    }
}
