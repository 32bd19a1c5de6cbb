//! The edge's side of the cap on a buyer's live holds across all SKUs
//! (domain/hold_cap.rs): no hop for a buyer far below the cap.
//!
//! Holds are reported to the buyer's hold-ledger shard (risk_object.rs)
//! after the reply (`wait_until`), batched per isolate. A buyer's first hold
//! in a minute on this isolate is not reported (decided in memory, no I/O):
//! a rush is thousands of viewers taking one hold each, and they cost
//! nothing past the reply. From the buyer's second hold in the minute on,
//! each is reported, with an unseen stand-in for the first, so a buyer
//! taking holds in a burst is counted exactly. Holds longer than ten
//! minutes are always reported; so what goes uncounted is at most one hold
//! per isolate per minute for ten minutes, for a buyer who never takes two
//! in a minute on one isolate. When a report finds the buyer one hold from
//! the cap, this isolate notes it in memory (no I/O at all), and while the
//! note lasts the buyer's reservations here claim their slot before the
//! SKU is asked, and are refused with a 409 at the cap. A request that
//! lands on an isolate without the note, or a burst that beats it, is
//! caught by the reports: the ledger gives back any hold past the
//! cap. So the cap holds within milliseconds everywhere, and a buyer at it
//! is told so up front wherever the edge has seen them near it.

use super::risk_object::{hold_shard, HoldClaim, RiskClient};
use crate::domain::hold_cap::{Claim, LiveHold, LiveHolds, Moment, LIVE_HOLDS_MAX_DEFAULT};
use crate::domain::types::digest16;
use crate::domain::types::{BuyerId, ReservationId, SkuId};
use futures_util::future::join_all;
use std::cell::Cell;
use std::cell::RefCell;
use std::collections::HashMap;
use worker::{console_error, Context, Date, Env, Response};

/// A report task gives way after this many rounds, or this long silent.
const REPORT_ROUNDS_MAX: usize = 64;
const REPORT_STALE_MS: u64 = 10_000;
/// How long a "near the cap" note lasts; a report renews it.
const NOTE_TTL_MS: u64 = 60_000;
/// An isolate remembers at most this many notes, and buyers seen.
const NOTES_MAX: usize = 10_000;
const SEEN_MAX: usize = 50_000;

thread_local! {
    /// Buyers this isolate has seen near the cap, until when.
    static NOTES: RefCell<HashMap<BuyerId, u64>> = RefCell::new(HashMap::new());
    /// Holds taken here and not yet reported.
    static QUEUE: RefCell<Vec<HoldClaim>> = const { RefCell::new(Vec::new()) };
    /// The minute in which this isolate last saw each buyer take a hold.
    static SEEN: RefCell<HashMap<BuyerId, u64>> = RefCell::new(HashMap::new());
    /// When the report under way last began a round (0: none). A report
    /// silent for [`REPORT_STALE_MS`] is taken to have died with its
    /// request, and the next hold starts another.
    static REPORTING: Cell<u64> = const { Cell::new(0) };
}
/// A slot claimed before the SKU answers lasts at most this long, unless
/// the report after sets the hold's real expiry.
const CLAIM_TTL_MS: u64 = 86_400_000;

/// The cap: `BUYER_LIVE_HOLDS_MAX` (1 to 1000; 0 turns it off), else the
/// default.
pub fn max(env: &Env) -> usize {
    env.var("BUYER_LIVE_HOLDS_MAX")
        .ok()
        .and_then(|v| v.to_string().parse::<usize>().ok())
        .filter(|n| (0..=1000).contains(n))
        .unwrap_or(LIVE_HOLDS_MAX_DEFAULT)
}

/// Whether this isolate has seen the buyer near the cap lately.
pub fn noted(buyer: &BuyerId) -> bool {
    let now = Date::now().as_millis();
    NOTES.with(|n| n.borrow().get(buyer).is_some_and(|until| *until > now))
}

fn note(buyer: &BuyerId) {
    let now = Date::now().as_millis();
    NOTES.with(|n| {
        let notes = &mut *n.borrow_mut();
        remember(notes, NOTES_MAX, buyer, now + NOTE_TTL_MS, |until| {
            until > now
        });
    });
}

/// Inserts into an isolate's bounded memory: when full, what `keep` says is
/// stale goes first, and everything if that is not enough (forgetting only
/// ever makes the edge ask or report more, never less).
fn remember(
    memo: &mut HashMap<BuyerId, u64>,
    max: usize,
    buyer: &BuyerId,
    value: u64,
    keep: impl Fn(u64) -> bool,
) {
    if memo.len() >= max {
        memo.retain(|_, v| keep(*v));
        if memo.len() >= max {
            memo.clear();
        }
    }
    memo.insert(buyer.clone(), value);
}

/// For a noted buyer: claims the slot before the SKU is asked. `Some(cap)`
/// when the buyer is at the cap; if the ledger cannot be reached, the hold
/// goes ahead and the report after decides.
pub async fn claim_first(
    env: &Env,
    cap: usize,
    buyer: &BuyerId,
    sku: &SkuId,
    hold: &ReservationId,
    now_ms: u64,
) -> Option<usize> {
    let live = LiveHold {
        hold: hold.clone(),
        sku: sku.clone(),
        expires_at_ms: now_ms + CLAIM_TTL_MS,
        unseen: false,
    };
    let claim = HoldClaim {
        buyer: buyer.clone(),
        hold: live,
        moment: Moment::Before,
        max: cap,
    };
    let answer = RiskClient::claim_holds(env, &hold_shard(buyer), vec![claim]).await;
    match answer.as_deref() {
        Ok([Claim::Over { max, .. }]) => Some(*max),
        Ok(_) => None,
        Err(e) => {
            console_error!("hold cap: claim for {buyer}: {e}");
            None
        }
    }
}

/// A hold longer than this is always reported (see the module's note).
const UNREPORTED_HOLD_MAX_MS: u64 = 600_000;

/// A storefront reservation the SKU has answered, for the cap's books.
pub struct Answered {
    pub cap: usize,
    pub buyer: BuyerId,
    pub sku: SkuId,
    /// The hold id this request drew (a replay answers an earlier one).
    pub drawn: ReservationId,
    pub claimed_first: bool,
}

/// After the SKU answered: decides here, with no I/O, what the cap's
/// ledger must hear, and leaves that for after the reply (`wait_until`).
/// Most holds of a rush need nothing.
pub fn after_sku(ctx: &Context, env: &Env, response: &Response, answered: Answered) {
    let header = |name: &str| response.headers().get(name).ok().flatten();
    // The SKU names the hold it gave in headers: no body to parse.
    let given: Option<(ReservationId, u64)> = match response.status_code() {
        201 => header("Edgestock-Hold")
            .and_then(|id| ReservationId::parse(&id).ok())
            .zip(header("Edgestock-Hold-Expires").and_then(|at| at.parse().ok())),
        _ => None,
    };
    let now = Date::now().as_millis();
    let what = match &given {
        Some((_, expires)) => match must_report(&answered.buyer, *expires, now) {
            // A hold claimed first is counted already: its report only
            // sets the real expiry.
            Report::Nothing if answered.claimed_first => Report::Hold,
            what => what,
        },
        None => Report::Nothing,
    };
    if !answered.claimed_first && what == Report::Nothing {
        return;
    }
    let env = env.clone();
    ctx.wait_until(async move {
        let Answered {
            cap,
            buyer,
            sku,
            drawn,
            claimed_first,
        } = answered;
        // A slot claimed for a hold the SKU did not give is freed.
        if claimed_first && given.as_ref().is_none_or(|(id, _)| *id != drawn) {
            if let Err(e) = RiskClient::forget_hold(&env, &buyer, drawn).await {
                console_error!("hold cap: freeing a slot of {buyer}: {e}");
            }
        }
        let Some((hold, expires_at_ms)) = given else {
            return;
        };
        // A buyer reported in a minute had a first hold in it that was
        // not: counted too, as an unseen stand-in (one per minute) that
        // lasts as long as an unreported hold can.
        if what == Report::HoldAndFirst {
            let minute = now / 60_000;
            let stand_in = LiveHold {
                hold: ReservationId::from_random(digest16(&[
                    "unseen",
                    buyer.as_str(),
                    &minute.to_string(),
                ])),
                sku: sku.clone(),
                expires_at_ms: minute * 60_000 + 60_000 + UNREPORTED_HOLD_MAX_MS,
                unseen: true,
            };
            queue(cap, &buyer, stand_in);
        }
        let live = LiveHold {
            hold,
            sku,
            expires_at_ms,
            unseen: false,
        };
        queue(cap, &buyer, live);
        report(&env).await;
    });
}

/// Adds a claim to the next report.
fn queue(cap: usize, buyer: &BuyerId, hold: LiveHold) {
    let claim = HoldClaim {
        buyer: buyer.clone(),
        hold,
        moment: Moment::After,
        max: cap,
    };
    QUEUE.with(|q| q.borrow_mut().push(claim));
}

/// Whether a hold the SKU gave must be reported: not a buyer's first in
/// this minute on this isolate (remembered here), unless it is long.
fn must_report(buyer: &BuyerId, expires_at_ms: u64, now_ms: u64) -> Report {
    if expires_at_ms.saturating_sub(now_ms) > UNREPORTED_HOLD_MAX_MS {
        return Report::Hold;
    }
    let minute = now_ms / 60_000;
    SEEN.with(|seen| {
        let seen = &mut *seen.borrow_mut();
        if seen.get(buyer) == Some(&minute) {
            return Report::HoldAndFirst;
        }
        remember(seen, SEEN_MAX, buyer, minute, |m| m == minute);
        Report::Nothing
    })
}

/// What to report of a hold the SKU gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    /// The buyer's first this minute here: nothing.
    Nothing,
    /// This hold.
    Hold,
    /// This hold, and a stand-in for the minute's first, unreported one.
    HoldAndFirst,
}

/// Sends what is queued, one call per shard, unless a report under way
/// will take it.
async fn report(env: &Env) {
    let now = Date::now().as_millis();
    let under_way = REPORTING.with(Cell::get);
    if under_way > 0 && now.saturating_sub(under_way) < REPORT_STALE_MS {
        return; // the report under way takes it
    }
    // This task reports until the queue is empty (or its rounds are spent,
    // and the next hold's task goes on): holds taken meanwhile go together,
    // one call per shard, however many buyers a rush brings.
    for _ in 0..REPORT_ROUNDS_MAX {
        REPORTING.with(|r| r.set(Date::now().as_millis().max(1)));
        let batch = QUEUE.with(|q| std::mem::take(&mut *q.borrow_mut()));
        if batch.is_empty() {
            break;
        }
        let mut shards: HashMap<String, Vec<HoldClaim>> = HashMap::new();
        for claim in batch {
            shards
                .entry(hold_shard(&claim.buyer))
                .or_default()
                .push(claim);
        }
        let calls = shards.into_iter().map(|(shard, claims)| async move {
            let buyers: Vec<BuyerId> = claims.iter().map(|c| c.buyer.clone()).collect();
            match RiskClient::claim_holds(env, &shard, claims).await {
                Ok(answers) => buyers.into_iter().zip(answers).collect(),
                Err(e) => {
                    console_error!("hold cap: report to {shard}: {e}");
                    Vec::new()
                }
            }
        });
        for (buyer, answer) in join_all(calls).await.into_iter().flatten() {
            match answer {
                Claim::Counted { live, max } if LiveHolds::near(live, max) => note(&buyer),
                Claim::Over { .. } => note(&buyer),
                Claim::Counted { .. } => {}
            }
        }
    }
    REPORTING.with(|r| r.set(0));
}
