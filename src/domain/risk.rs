//! Risk control (订单风控): rules as data, evaluated on facts the shell has
//! gathered, to a decision that names every rule that fired and the numbers
//! it saw. Never a bare "denied".
//!
//! A [`RuleSet`] comes in through the admin API as JSON, is checked by
//! [`RuleSet::parse`] (shape, then meaning) and only then stored under a new
//! version; the hot path only ever evaluates a set that passed. Evaluation is
//! plain counting over bounded histories: it cannot fail, whatever the rules.
//!
//! Who counts what: the order object asks one small object per subject (a
//! buyer, a device, an address) to note the attempt and hand back its recent
//! history ([`Seen`]); nothing global is consulted but the rule set, which
//! is cached. A reservation is checked at the router with what needs no
//! history (blocklists, new accounts): a hold is not yet an order.

use super::live::RoomId;
use super::types::BuyerId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// At most this many rules in a set, and entries in one blocklist.
pub const RULES_MAX: usize = 50;
pub const LIST_MAX: usize = 1_000;
/// A window longer than a day is not a velocity.
pub const WINDOW_MAX_S: u64 = 86_400;
/// What a subject remembers: its last this-many attempts within a day.
pub const HISTORY_MAX: usize = 256;
pub const HISTORY_MS: u64 = WINDOW_MAX_S * 1000;
/// How long an order in review keeps its holds, unless the set says: long
/// enough for a merchant to look, short enough that review is no way to
/// hold stock longer than paying would.
pub const REVIEW_HOLD_S_DEFAULT: u64 = 600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Review,
    Deny,
}

/// What a rule does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Review,
    Deny,
}

impl Action {
    fn verdict(self) -> Verdict {
        match self {
            Action::Review => Verdict::Review,
            Action::Deny => Verdict::Deny,
        }
    }
}

/// Whose attempts a rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    Buyer,
    Device,
    Address,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    /// More than `max` orders from one subject within `window_s`.
    Velocity {
        subject: Subject,
        max: u32,
        window_s: u64,
    },
    /// More than `max_buyers` different buyers on one device or address
    /// within `window_s`.
    SharedBy {
        subject: Subject,
        max_buyers: u32,
        window_s: u64,
    },
    /// An account younger than `younger_than_s` (the session's
    /// `account_created`) ordering more than `max_units`.
    NewAccount { younger_than_s: u64, max_units: u64 },
    /// A buyer with at least `min_expired` unpaid orders expired within
    /// `window_s` (holds taken and never paid: 恶意占库存).
    UnpaidHistory { min_expired: u32, window_s: u64 },
    /// An order of more than `max_units` units.
    LargeOrder { max_units: u64 },
    /// Listed buyers, devices or client addresses.
    Blocklist {
        #[serde(default)]
        buyers: Vec<String>,
        #[serde(default)]
        devices: Vec<String>,
        #[serde(default)]
        addresses: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A short name the decision quotes: `[a-z0-9-]`, 1 to 40 characters.
    pub id: String,
    pub action: Action,
    pub check: Check,
    /// Only orders from these live rooms; empty: every order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<RoomId>,
}

/// A checked, versioned set of rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSet {
    pub version: u64,
    pub rules: Vec<Rule>,
    /// How long an order waiting for review keeps its holds; once approved,
    /// the buyer may pay until they end.
    pub review_hold_s: u64,
}

/// What an admin sends: the rules. The server gives the version; one sent
/// back (a set read with GET, edited, and PUT again) is accepted and
/// replaced, so the document a GET returns is always a valid PUT.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSetBody {
    #[serde(default, rename = "version")]
    _version: Option<u64>,
    rules: Vec<Rule>,
    #[serde(default)]
    review_hold_s: Option<u64>,
}

/// Why a rule set was refused: which rule, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRules(pub String);

impl RuleSet {
    /// The set in force before a merchant writes one: sane for a live sale.
    pub fn defaults() -> RuleSet {
        let rule = |id: &str, action, check| Rule {
            id: id.to_owned(),
            action,
            check,
            rooms: Vec::new(),
        };
        RuleSet {
            version: 0,
            review_hold_s: REVIEW_HOLD_S_DEFAULT,
            rules: vec![
                rule(
                    "buyer-velocity",
                    Action::Review,
                    Check::Velocity {
                        subject: Subject::Buyer,
                        max: 10,
                        window_s: 60,
                    },
                ),
                rule(
                    "device-velocity",
                    Action::Review,
                    Check::Velocity {
                        subject: Subject::Device,
                        max: 20,
                        window_s: 60,
                    },
                ),
                rule(
                    "address-velocity",
                    Action::Review,
                    Check::Velocity {
                        subject: Subject::Address,
                        max: 600,
                        window_s: 60,
                    },
                ),
                rule(
                    "shared-device",
                    Action::Review,
                    Check::SharedBy {
                        subject: Subject::Device,
                        max_buyers: 5,
                        window_s: 3_600,
                    },
                ),
                rule(
                    "new-account",
                    Action::Review,
                    Check::NewAccount {
                        younger_than_s: 86_400,
                        max_units: 3,
                    },
                ),
                rule(
                    "unpaid-history",
                    Action::Review,
                    Check::UnpaidHistory {
                        min_expired: 3,
                        window_s: 86_400,
                    },
                ),
                rule(
                    "large-order",
                    Action::Review,
                    Check::LargeOrder { max_units: 50 },
                ),
            ],
        }
    }

    /// Whether any rule needs `subject`'s history: when none does, the
    /// shell skips that subject's object (no hop for nothing).
    pub fn counts(&self, subject: Subject) -> bool {
        self.rules.iter().any(|rule| match &rule.check {
            Check::Velocity { subject: s, .. } | Check::SharedBy { subject: s, .. } => {
                *s == subject
            }
            Check::UnpaidHistory { .. } => subject == Subject::Buyer,
            _ => false,
        })
    }

    /// Parses and checks an admin's rule set; `version` is the one it will
    /// be stored under.
    pub fn parse(json: &[u8], version: u64) -> Result<RuleSet, InvalidRules> {
        let body: RuleSetBody =
            serde_json::from_slice(json).map_err(|e| InvalidRules(e.to_string()))?;
        let set = RuleSet {
            version,
            rules: body.rules,
            review_hold_s: body.review_hold_s.unwrap_or(REVIEW_HOLD_S_DEFAULT),
        };
        set.check()?;
        Ok(set)
    }

    fn check(&self) -> Result<(), InvalidRules> {
        if self.rules.len() > RULES_MAX {
            return Err(InvalidRules(format!("at most {RULES_MAX} rules")));
        }
        if !(60..=86_400).contains(&self.review_hold_s) {
            return Err(InvalidRules(
                "review_hold_s is from 60 to 86400 seconds".into(),
            ));
        }
        let mut ids = BTreeSet::new();
        for rule in &self.rules {
            let bad = |why: &str| InvalidRules(format!("rule '{}': {why}", rule.id));
            let id_ok = (1..=40).contains(&rule.id.len())
                && rule
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !id_ok {
                return Err(InvalidRules(format!(
                    "rule id {:?}: 1 to 40 of a-z, 0-9 and '-'",
                    rule.id
                )));
            }
            if !ids.insert(rule.id.as_str()) {
                return Err(bad("the id is used twice"));
            }
            let window = |w: u64| (1..=WINDOW_MAX_S).contains(&w);
            match &rule.check {
                Check::Velocity { max, window_s, .. } => {
                    if *max == 0 || !window(*window_s) {
                        return Err(bad("max ≥ 1 and window_s from 1 to 86400"));
                    }
                }
                Check::SharedBy {
                    subject,
                    max_buyers,
                    window_s,
                } => {
                    if *subject == Subject::Buyer {
                        return Err(bad("shared_by counts buyers on a device or address"));
                    }
                    if *max_buyers == 0 || !window(*window_s) {
                        return Err(bad("max_buyers ≥ 1 and window_s from 1 to 86400"));
                    }
                }
                Check::NewAccount {
                    younger_than_s,
                    max_units,
                } => {
                    if *younger_than_s == 0 || *younger_than_s > 365 * 86_400 || *max_units == 0 {
                        return Err(bad("younger_than_s from 1 s to a year, max_units ≥ 1"));
                    }
                }
                Check::UnpaidHistory {
                    min_expired,
                    window_s,
                } => {
                    if *min_expired == 0 || !window(*window_s) {
                        return Err(bad("min_expired ≥ 1 and window_s from 1 to 86400"));
                    }
                }
                Check::LargeOrder { max_units } => {
                    if *max_units == 0 {
                        return Err(bad("max_units ≥ 1"));
                    }
                }
                Check::Blocklist {
                    buyers,
                    devices,
                    addresses,
                } => {
                    let lists = [buyers, devices, addresses];
                    if lists.iter().any(|l| l.len() > LIST_MAX) {
                        return Err(bad("each list has at most 1000 entries"));
                    }
                    if lists.iter().all(|l| l.is_empty()) {
                        return Err(bad("a blocklist lists something"));
                    }
                    if lists
                        .iter()
                        .flat_map(|l| l.iter())
                        .any(|e| e.is_empty() || e.len() > 128)
                    {
                        return Err(bad("entries are 1 to 128 characters"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// One attempt a subject remembers: when, and by which buyer (a short
/// digest, enough to count distinct buyers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub at_ms: u64,
    pub buyer: String,
}

/// A subject's memory: recent order attempts, and (for a buyer) unpaid
/// orders that expired. Bounded by count and by age.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub seen: Vec<Seen>,
    pub expired: Vec<u64>,
}

impl History {
    /// Notes an attempt at `now` and forgets what is too old or too many.
    pub fn note(&mut self, seen: Seen) {
        self.seen.push(seen);
        self.prune(self.seen.last().map_or(0, |s| s.at_ms));
    }

    pub fn note_expired(&mut self, at_ms: u64) {
        self.expired.push(at_ms);
        self.prune(at_ms);
    }

    fn prune(&mut self, now: u64) {
        let since = now.saturating_sub(HISTORY_MS);
        self.seen.retain(|s| s.at_ms >= since);
        self.expired.retain(|at| *at >= since);
        if self.seen.len() > HISTORY_MAX {
            self.seen.drain(..self.seen.len() - HISTORY_MAX);
        }
        if self.expired.len() > HISTORY_MAX {
            self.expired.drain(..self.expired.len() - HISTORY_MAX);
        }
    }
}

/// Everything a decision is made from. Histories already include the
/// attempt being judged.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub now_ms: u64,
    pub buyer: Option<BuyerId>,
    pub device: Option<String>,
    pub address: Option<String>,
    /// The session's `account_created`, seconds.
    pub account_created_s: Option<u64>,
    pub units: u64,
    pub room: Option<RoomId>,
    pub buyer_history: Option<History>,
    pub device_history: Option<History>,
    pub address_history: Option<History>,
}

/// A rule that fired, with what it saw against what it allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fired {
    pub rule: String,
    pub action: Action,
    pub reason: String,
    pub observed: u64,
    pub limit: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub rules_version: u64,
    pub fired: Vec<Fired>,
}

/// Orders are judged by every rule; reservations by those that need no
/// history, and only their `deny` (a hold is reviewed when it becomes an
/// order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    Order,
    Reservation,
}

/// Applies every rule that covers the facts' room to the facts.
pub fn evaluate(set: &RuleSet, facts: &Facts, judged: Judged) -> Decision {
    let mut fired = Vec::new();
    for rule in &set.rules {
        let in_room =
            rule.rooms.is_empty() || facts.room.as_ref().is_some_and(|r| rule.rooms.contains(r));
        if !in_room {
            continue;
        }
        if judged == Judged::Reservation && rule.action == Action::Review {
            continue;
        }
        if let Some((reason, observed, limit)) = check(&rule.check, facts, judged) {
            fired.push(Fired {
                rule: rule.id.clone(),
                action: rule.action,
                reason,
                observed,
                limit,
            });
        }
    }
    let verdict = fired
        .iter()
        .map(|f| f.action.verdict())
        .max()
        .unwrap_or(Verdict::Allow);
    Decision {
        verdict,
        rules_version: set.version,
        fired,
    }
}

/// `Some((reason, observed, limit))` when `check` fires.
fn check(check: &Check, facts: &Facts, judged: Judged) -> Option<(String, u64, u64)> {
    let since = |window_s: u64| facts.now_ms.saturating_sub(window_s * 1000);
    let history = |subject: Subject| match subject {
        Subject::Buyer => facts.buyer_history.as_ref(),
        Subject::Device => facts.device_history.as_ref(),
        Subject::Address => facts.address_history.as_ref(),
    };
    let name = |subject: Subject| match subject {
        Subject::Buyer => "buyer",
        Subject::Device => "device",
        Subject::Address => "address",
    };
    // The subject's attempts within the window (none known: the rule
    // cannot fire).
    let recent = |subject: Subject, window_s: u64| {
        let from = since(window_s);
        history(subject).map(move |h| h.seen.iter().filter(move |s| s.at_ms >= from))
    };
    let past =
        |n: u64, limit: u64, reason: &dyn Fn() -> String| (n > limit).then(|| (reason(), n, limit));
    match check {
        Check::Velocity { .. } | Check::SharedBy { .. } | Check::UnpaidHistory { .. }
            if judged == Judged::Reservation =>
        {
            None
        }
        Check::Velocity {
            subject,
            max,
            window_s,
        } => {
            let n = recent(*subject, *window_s)?.count() as u64;
            past(n, u64::from(*max), &|| {
                format!("{n} orders from this {} in {window_s} s", name(*subject))
            })
        }
        Check::SharedBy {
            subject,
            max_buyers,
            window_s,
        } => {
            let buyers: BTreeSet<&str> = recent(*subject, *window_s)?
                .map(|s| s.buyer.as_str())
                .collect();
            let n = buyers.len() as u64;
            past(n, u64::from(*max_buyers), &|| {
                format!("{n} buyers on one {} in {window_s} s", name(*subject))
            })
        }
        Check::NewAccount {
            younger_than_s,
            max_units,
        } => {
            let created = facts.account_created_s?;
            let age_s = (facts.now_ms / 1000).saturating_sub(created);
            (age_s < *younger_than_s && facts.units > *max_units).then(|| {
                (
                    format!("an account {age_s} s old asks for {} units", facts.units),
                    facts.units,
                    *max_units,
                )
            })
        }
        Check::UnpaidHistory {
            min_expired,
            window_s,
        } => {
            let from = since(*window_s);
            let n = facts
                .buyer_history
                .as_ref()?
                .expired
                .iter()
                .filter(|at| **at >= from)
                .count() as u64;
            (n >= u64::from(*min_expired)).then(|| {
                (
                    format!("{n} unpaid orders expired in {window_s} s"),
                    n,
                    u64::from(*min_expired),
                )
            })
        }
        Check::LargeOrder { max_units } => (facts.units > *max_units).then(|| {
            (
                format!("{} units in one order", facts.units),
                facts.units,
                *max_units,
            )
        }),
        Check::Blocklist {
            buyers,
            devices,
            addresses,
        } => {
            let listed = |list: &Vec<String>, value: Option<&str>| {
                value.is_some_and(|v| list.iter().any(|e| e == v))
            };
            let which = if listed(buyers, facts.buyer.as_ref().map(BuyerId::as_str)) {
                "buyer"
            } else if listed(devices, facts.device.as_deref()) {
                "device"
            } else if listed(addresses, facts.address.as_deref()) {
                "address"
            } else {
                return None;
            };
            Some((format!("the {which} is blocklisted"), 1, 0))
        }
    }
}
