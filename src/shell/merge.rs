//! Request merging at the edge (合并扣减): reservations for one SKU that
//! reach this router isolate within a short window go to the SKU object as
//! one call (`SkuOp::Batch`), which applies them as one step in one
//! transaction. Each caller still gets exactly its own answer (the core
//! answers each request of a step on its own), and idempotency keys still
//! apply per request.
//!
//! The first request for a SKU opens a batch and waits `MERGE_WINDOW_MS`
//! (default 1; 0 turns merging off) for others to join, up to
//! [`BATCH_MAX`]; then it sends the batch and hands each joiner its reply.
//! The window is per isolate memory, never shared state: an isolate that
//! dies takes only its own callers' batch with it (they get no answer and
//! retry, with their keys). A batch whose leader never comes back (its
//! request cancelled) is replaced once it is 250 ms past its window, and
//! its joiners give up after 5 s with a 500 (safe to retry with the key).
//!
//! The runtime runs each request in its own context and cancels one that
//! waits on nothing of its own (a wake-up from another request's I/O does
//! not count), so a joiner does not wait on a channel: it looks at its slot
//! on its own timer, every millisecond, until the leader fills it.

use super::stubs::{SkuCall, SkuClient, SkuOp};
use crate::domain::stock::{Reply, Request as StockRequest};
use crate::domain::types::SkuId;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use worker::{console_error, Date, Delay, Env};

/// The most requests one merged call carries: a bound on the step's work
/// and so on each caller's wait.
pub const BATCH_MAX: usize = 64;

/// Where a caller's answer is left: None until the batch is answered, then
/// its reply (None if the SKU object could not be reached).
type Slot = Rc<RefCell<Option<Option<Reply>>>>;

/// How long a joiner waits for its batch's answer before giving up (500:
/// safe to retry with the same key).
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Batch {
    requests: Vec<StockRequest>,
    waiters: Vec<Slot>,
    /// When it opened: a batch still open long after its window had a
    /// leader that never came back (its request cancelled), and is replaced.
    opened_ms: u64,
}

/// Past its window by this much, an open batch is taken for abandoned.
const STALE_AFTER_MS: u64 = 250;

thread_local! {
    /// The batch each SKU is gathering in this isolate.
    static OPEN: RefCell<HashMap<Target, Rc<RefCell<Batch>>>> = RefCell::new(HashMap::new());
}

/// Where a batch goes: a SKU's own object, or one of its stock buckets.
type Target = (SkuId, Option<u16>);

/// The merge window for this deployment; None when merging is off.
pub fn window(env: &Env) -> Option<Duration> {
    let ms = env
        .var("MERGE_WINDOW_MS")
        .ok()
        .and_then(|v| v.to_string().parse::<u64>().ok())
        .unwrap_or(1)
        .min(20);
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// Applies `request` at `sku` together with whatever joins it within
/// `window`; None if the SKU object could not be reached (the caller
/// answers 500: safe to retry with the same key).
pub async fn step(
    env: &Env,
    sku: &SkuId,
    bucket: Option<u16>,
    request: StockRequest,
    window: Duration,
) -> Option<Reply> {
    let target: Target = (sku.clone(), bucket);
    let slot: Slot = Rc::new(RefCell::new(None));
    let tx = slot.clone();
    let now = Date::now().as_millis();
    let stale_before = now.saturating_sub(window.as_millis() as u64 + STALE_AFTER_MS);
    let leader = OPEN.with(|open| {
        let mut open = open.borrow_mut();
        // A batch long past its window lost its leader: a new one opens.
        let open_batch = open
            .get(&target)
            .filter(|b| b.borrow().opened_ms >= stale_before);
        if let Some(batch) = open_batch {
            let mut b = batch.borrow_mut();
            b.requests.push(request);
            b.waiters.push(tx);
            if b.requests.len() >= BATCH_MAX {
                // Full: it goes as it is, and the next request opens another.
                drop(b);
                open.remove(&target);
            }
            return None;
        }
        let batch = Rc::new(RefCell::new(Batch {
            requests: vec![request],
            waiters: vec![tx],
            opened_ms: now,
        }));
        open.insert(target.clone(), batch.clone());
        Some(batch)
    });
    let Some(batch) = leader else {
        let mut waited = Duration::ZERO;
        while waited < JOIN_TIMEOUT {
            Delay::from(Duration::from_millis(1)).await;
            waited += Duration::from_millis(1);
            if let Some(answer) = slot.borrow_mut().take() {
                return answer;
            }
        }
        return None;
    };
    Delay::from(window).await;
    OPEN.with(|open| {
        let mut open = open.borrow_mut();
        if open.get(&target).is_some_and(|b| Rc::ptr_eq(b, &batch)) {
            open.remove(&target);
        }
    });
    let Batch {
        requests, waiters, ..
    } = std::mem::take(&mut *batch.borrow_mut());
    let count = requests.len();
    let replies = send(env, sku, bucket, requests).await;
    match replies {
        Some(replies) if replies.len() == count => {
            for (waiter, reply) in waiters.into_iter().zip(replies) {
                *waiter.borrow_mut() = Some(Some(reply));
            }
        }
        _ => {
            for waiter in waiters {
                *waiter.borrow_mut() = Some(None);
            }
        }
    }
    // The leader's own answer, left in its slot like the others'.
    let answer = slot.borrow_mut().take();
    answer.flatten()
}

async fn send(
    env: &Env,
    sku: &SkuId,
    bucket: Option<u16>,
    requests: Vec<StockRequest>,
) -> Option<Vec<Reply>> {
    let call = SkuCall {
        sku: sku.clone(),
        bucket,
        buyer: None,
        op: SkuOp::Batch { requests },
    };
    let answer = async {
        let mut response = SkuClient::send(env, &call).await?;
        super::routing::learn(sku, &response, Date::now().as_millis());
        if response.status_code() != 200 {
            return Err(worker::Error::RustError(format!(
                "SKU {sku} answered {} to a batch",
                response.status_code()
            )));
        }
        response.json::<Vec<Reply>>().await
    };
    match answer.await {
        Ok(replies) => Some(replies),
        Err(e) => {
            console_error!("merge: {e}");
            None
        }
    }
}
