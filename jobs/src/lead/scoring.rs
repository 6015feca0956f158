//! Lead scoring: explainable rules, per-tenant weights and thresholds.
//!
//! A score is a sum of points, one entry per rule, each listed with what the rule saw, so a
//! salesperson can see *why* a lead is hot. Each rule grades the lead from 0 to 1; a tenant's
//! weight is the most points the rule can give. The sum is capped at 100. Tiers come from the
//! tenant's thresholds; a lead is *qualified* when it reaches the hot tier.
//!
//! Pure and deterministic: the same facts and rules always give the same score. The defaults
//! ([`Rules::default`]) are what a tenant gets until it sets its own (`leadq tenant update
//! <slug> --weight RULE=N --hot-threshold N --warm-threshold N`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The rules, in the order their reasons are listed.
pub const RULES: &[&str] = &[
    "budget",
    "timeline",
    "company_size",
    "need",
    "contact",
    "engagement",
];

/// The questionnaire, in the order the bot asks it. A free-text answer fills the first
/// question not answered yet.
pub const QUESTIONNAIRE: &[&str] = &["budget", "timeline", "company_size", "need"];

/// Lead temperature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// At or above the hot threshold: call today. Qualified.
    Hot,
    /// At or above the warm threshold.
    Warm,
    /// Below the warm threshold.
    Cold,
}

impl Tier {
    /// Its name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Hot => "hot",
            Tier::Warm => "warm",
            Tier::Cold => "cold",
        }
    }
}

/// One rule's contribution to a score.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reason {
    /// The rule (one of [`RULES`]).
    pub rule: String,
    /// Points awarded.
    pub points: u8,
    /// What the rule saw, in words.
    pub detail: String,
}

/// A score with its explanation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Score {
    /// 0-100.
    pub score: u8,
    /// Tier of the score.
    pub tier: Tier,
    /// One entry per rule.
    pub reasons: Vec<Reason>,
}

/// A tenant's scoring configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// Maximum points per rule (0-100). Rules not listed take their default.
    pub weights: BTreeMap<String, u8>,
    /// Scores at or above this are hot (qualified).
    pub hot_threshold: u8,
    /// Scores at or above this (and below hot) are warm.
    pub warm_threshold: u8,
}

/// The most points `rule` gives when a tenant set no weight of its own.
fn default_weight(rule: &str) -> u8 {
    match rule {
        "budget" => 30,
        "timeline" => 25,
        "company_size" => 20,
        "need" => 15,
        "contact" | "engagement" => 10,
        _ => 0,
    }
}

impl Default for Rules {
    fn default() -> Self {
        let weights = RULES
            .iter()
            .map(|r| ((*r).to_owned(), default_weight(r)))
            .collect();
        Self {
            weights,
            hot_threshold: 70,
            warm_threshold: 40,
        }
    }
}

/// A rule configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// Not one of [`RULES`].
    #[error(
        "unknown rule {0:?} (known: budget, timeline, company_size, need, contact, engagement)"
    )]
    UnknownRule(String),
    /// A weight above 100.
    #[error("weight of {0} must be 0-100")]
    Weight(String),
    /// Thresholds out of order.
    #[error("thresholds must satisfy 0 < warm <= hot <= 100")]
    Thresholds,
}

impl Rules {
    /// Checks the configuration; every weight names a known rule.
    pub fn validate(&self) -> Result<(), RulesError> {
        for (rule, w) in &self.weights {
            if !RULES.contains(&rule.as_str()) {
                return Err(RulesError::UnknownRule(rule.clone()));
            }
            if *w > 100 {
                return Err(RulesError::Weight(rule.clone()));
            }
        }
        if !(0 < self.warm_threshold
            && self.warm_threshold <= self.hot_threshold
            && self.hot_threshold <= 100)
        {
            return Err(RulesError::Thresholds);
        }
        Ok(())
    }

    /// The weight of `rule` (its default when the tenant set none).
    pub fn weight(&self, rule: &str) -> u8 {
        self.weights
            .get(rule)
            .copied()
            .unwrap_or_else(|| default_weight(rule))
    }

    /// The tier of a score.
    pub fn tier(&self, score: u8) -> Tier {
        if score >= self.hot_threshold {
            Tier::Hot
        } else if score >= self.warm_threshold {
            Tier::Warm
        } else {
            Tier::Cold
        }
    }

    /// The tenant's rules, or the defaults when it set none.
    pub async fn load(conn: &mut sqlx::PgConnection, tenant: Uuid) -> Result<Self, sqlx::Error> {
        Ok(Self::load_with_candidate(conn, tenant).await?.0)
    }

    /// The tenant's live rules and its candidate rules, if any (`crate::lead::shadow`), in one
    /// round trip: the candidate costs a tenant without one nothing.
    pub async fn load_with_candidate(
        conn: &mut sqlx::PgConnection,
        tenant: Uuid,
    ) -> Result<(Self, Option<Self>), sqlx::Error> {
        let (live, candidate, _) = Self::load_for_lead(conn, tenant, None).await?;
        Ok((live, candidate))
    }

    /// [`Rules::load_with_candidate`] and the number of messages `lead` received (0 for
    /// `None`): everything scoring a stored lead reads, in one round trip.
    pub async fn load_for_lead(
        conn: &mut sqlx::PgConnection,
        tenant: Uuid,
        lead: Option<Uuid>,
    ) -> Result<(Self, Option<Self>, i64), sqlx::Error> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            rules: RulesRow,
            inbound: i64,
        }
        let row: Row = sqlx::query_as(&format!(
            "select {RULES_COLUMNS},
                    (select count(*) from lead_messages m
                      where m.tenant_id = t.tenant_id and m.lead_id = $2) as inbound
               from (select $1::uuid as tenant_id) t {RULES_JOINS}"
        ))
        .bind(tenant)
        .bind(lead)
        .fetch_one(conn)
        .await?;
        let (live, candidate) = row.rules.rules();
        Ok((live, candidate, row.inbound))
    }
}

/// The columns a statement selects to get a tenant's live and candidate rules
/// ([`RulesRow`]), joined by [`RULES_JOINS`] to a row `t` that has the `tenant_id`: so the
/// lead store reads them in the statement that reads the lead.
pub(crate) const RULES_COLUMNS: &str = "r.weights as live_weights, r.hot_threshold as live_hot, \
     r.warm_threshold as live_warm, c.weights as candidate_weights, \
     c.hot_threshold as candidate_hot, c.warm_threshold as candidate_warm";

/// See [`RULES_COLUMNS`].
pub(crate) const RULES_JOINS: &str = "left join scoring_rules r on r.tenant_id = t.tenant_id \
     left join scoring_rules_candidate c on c.tenant_id = t.tenant_id";

type Weights = sqlx::types::Json<BTreeMap<String, u8>>;

/// A tenant's rules as [`RULES_COLUMNS`] reads them (`None` where it set none).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RulesRow {
    live_weights: Option<Weights>,
    live_hot: Option<i32>,
    live_warm: Option<i32>,
    candidate_weights: Option<Weights>,
    candidate_hot: Option<i32>,
    candidate_warm: Option<i32>,
}

impl RulesRow {
    /// The live rules (the defaults when the tenant set none) and the candidate rules, if any.
    pub(crate) fn rules(self) -> (Rules, Option<Rules>) {
        let rules = |w: Weights, hot: Option<i32>, warm: Option<i32>| Rules {
            weights: w.0,
            hot_threshold: hot.and_then(|h| u8::try_from(h).ok()).unwrap_or(70),
            warm_threshold: warm.and_then(|w| u8::try_from(w).ok()).unwrap_or(40),
        };
        let live = match self.live_weights {
            None => Rules::default(),
            Some(w) => rules(w, self.live_hot, self.live_warm),
        };
        let candidate = self
            .candidate_weights
            .map(|w| rules(w, self.candidate_hot, self.candidate_warm));
        (live, candidate)
    }
}

/// What the rules look at.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Questionnaire answers.
    pub answers: &'a BTreeMap<String, String>,
    /// The lead left an email address or a phone number.
    pub reachable: bool,
    /// Incoming chat messages attached to the lead.
    pub inbound_messages: i64,
}

/// A rule's grade: a fraction of the rule's weight, in sixtieths (exact for every grade used
/// below), and what it saw.
struct Grade(u32, &'static str);

fn norm(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace([' ', '-'], "_")
}

fn budget(raw: Option<&String>) -> Grade {
    let Some(raw) = raw else {
        return Grade(0, "no budget given");
    };
    // Bands ("10k_50k", "50k+") and plain amounts ("20000", "$20k").
    let n = norm(raw);
    // The first number, thousands separators allowed ("20,000"); a band counts its lower end.
    let digits: String = n
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    let base: u64 = digits.parse().unwrap_or(0);
    let amount = if n.contains('k') {
        base.saturating_mul(1000)
    } else {
        base
    };
    match amount {
        50_000.. => Grade(60, "budget 50k or more"),
        10_000.. => Grade(40, "budget 10k-50k"),
        1.. => Grade(10, "budget under 10k"),
        0 => Grade(0, "budget not understood"),
    }
}

fn timeline(raw: Option<&String>) -> Grade {
    let Some(raw) = raw else {
        return Grade(0, "no timeline given");
    };
    match norm(raw).as_str() {
        "now" | "asap" | "this_week" | "this_month" | "immediately" => {
            Grade(60, "buying this month")
        }
        "this_quarter" | "1_3_months" | "next_month" | "next_quarter" => {
            Grade(36, "buying this quarter")
        }
        "this_year" | "later" | "6_months" | "3_6_months" | "next_year" => {
            Grade(12, "buying later")
        }
        _ => Grade(0, "timeline not understood"),
    }
}

fn company_size(raw: Option<&String>) -> Grade {
    let Some(raw) = raw else {
        return Grade(0, "no company size given");
    };
    let lower: u64 = norm(raw)
        .split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    match lower {
        201.. => Grade(60, "company of 200+ people"),
        51..=200 => Grade(45, "company of 51-200 people"),
        11..=50 => Grade(30, "company of 11-50 people"),
        1..=10 => Grade(15, "company of 1-10 people"),
        0 => Grade(0, "company size not understood"),
    }
}

fn need(raw: Option<&String>) -> Grade {
    match raw.map(|s| s.trim().chars().count()) {
        Some(n) if n >= 20 => Grade(60, "need described in detail"),
        Some(n) if n > 0 => Grade(20, "need mentioned briefly"),
        _ => Grade(0, "no need described"),
    }
}

fn contact(reachable: bool) -> Grade {
    if reachable {
        Grade(60, "reachable by email or phone")
    } else {
        Grade(0, "no email or phone")
    }
}

fn engagement(inbound: i64) -> Grade {
    match inbound {
        3.. => Grade(60, "3 or more messages in chat"),
        1..=2 => Grade(30, "wrote in chat"),
        _ => Grade(0, "no chat messages"),
    }
}

/// Scores a lead.
pub fn score(facts: Facts<'_>, rules: &Rules) -> Score {
    let a = facts.answers;
    let grades = [
        ("budget", budget(a.get("budget"))),
        ("timeline", timeline(a.get("timeline"))),
        ("company_size", company_size(a.get("company_size"))),
        ("need", need(a.get("need"))),
        ("contact", contact(facts.reachable)),
        ("engagement", engagement(facts.inbound_messages)),
    ];
    let reasons: Vec<Reason> = grades
        .into_iter()
        .map(|(rule, Grade(sixtieths, detail))| {
            let w = u32::from(rules.weight(rule));
            // Round half up, in integers.
            let points = (w * sixtieths + 30) / 60;
            Reason {
                rule: rule.to_owned(),
                points: u8::try_from(points).unwrap_or(u8::MAX),
                detail: detail.to_owned(),
            }
        })
        .collect();
    let total: u32 = reasons.iter().map(|r| u32::from(r.points)).sum();
    let score = u8::try_from(total.min(100)).unwrap_or(100);
    Score {
        score,
        tier: rules.tier(score),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn facts(a: &BTreeMap<String, String>, reachable: bool, inbound: i64) -> Facts<'_> {
        Facts {
            answers: a,
            reachable,
            inbound_messages: inbound,
        }
    }

    #[test]
    fn a_lead_with_everything_is_hot_and_every_rule_is_explained() {
        let a = answers(&[
            ("budget", "50k+"),
            ("timeline", "this_month"),
            ("company_size", "51-200"),
            ("need", "We need a CRM integration for our sales team"),
        ]);
        let s = score(facts(&a, true, 0), &Rules::default());
        assert_eq!(s.score, 30 + 25 + 15 + 15 + 10);
        assert_eq!(s.tier, Tier::Hot);
        assert_eq!(s.reasons.len(), RULES.len());
        assert!(s.reasons.iter().all(|r| !r.detail.is_empty()));
        // Chat engagement adds up to the cap.
        assert_eq!(score(facts(&a, true, 3), &Rules::default()).score, 100);
    }

    #[test]
    fn an_empty_lead_is_cold_with_zero() {
        let a = BTreeMap::new();
        let s = score(facts(&a, false, 0), &Rules::default());
        assert_eq!((s.score, s.tier), (0, Tier::Cold));
    }

    #[test]
    fn the_score_is_deterministic_and_tiers_follow_the_thresholds() {
        let a = answers(&[("budget", "20000"), ("timeline", "this quarter")]);
        let r = Rules::default();
        assert_eq!(
            score(facts(&a, false, 0), &r),
            score(facts(&a, false, 0), &r)
        );
        assert_eq!(score(facts(&a, false, 0), &r).score, 35);
        for (band, points) in [("10k_50k", 20), ("20,000", 20), ("$5k", 5), ("50k+", 30)] {
            let a = answers(&[("budget", band)]);
            assert_eq!(score(facts(&a, false, 0), &r).score, points, "{band}");
        }
        assert_eq!(r.tier(70), Tier::Hot);
        assert_eq!(r.tier(69), Tier::Warm);
        assert_eq!(r.tier(40), Tier::Warm);
        assert_eq!(r.tier(39), Tier::Cold);
        let strict = Rules {
            hot_threshold: 90,
            warm_threshold: 50,
            ..Rules::default()
        };
        assert_eq!(strict.tier(89), Tier::Warm);
        assert_eq!(strict.tier(49), Tier::Cold);
    }

    #[test]
    fn tenant_weights_change_the_points_and_are_explained() {
        let a = answers(&[("budget", "50k+"), ("need", "short")]);
        let mut r = Rules::default();
        r.weights.insert("budget".into(), 60);
        r.weights.insert("need".into(), 0);
        let s = score(facts(&a, false, 0), &r);
        let points: BTreeMap<_, _> = s
            .reasons
            .iter()
            .map(|x| (x.rule.as_str(), x.points))
            .collect();
        assert_eq!(points["budget"], 60);
        assert_eq!(points["need"], 0);
        assert_eq!(s.score, 60);
    }

    #[test]
    fn bad_rule_configurations_are_refused() {
        let mut r = Rules::default();
        r.weights.insert("astrology".into(), 5);
        assert_eq!(
            r.validate(),
            Err(RulesError::UnknownRule("astrology".into()))
        );
        let r = Rules {
            hot_threshold: 30,
            warm_threshold: 40,
            ..Rules::default()
        };
        assert_eq!(r.validate(), Err(RulesError::Thresholds));
        assert_eq!(Rules::default().validate(), Ok(()));
    }
}
