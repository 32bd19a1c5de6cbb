//! The SKU object's part in stock buckets (分桶库存, see domain/buckets.rs):
//! the same object class is a SKU's parent (named by the SKU id) or one of
//! its buckets (named `{sku}#b{n}`; its calls say which).
//!
//! - A **parent** of a split SKU passes a call for a buyer's units on to
//!   that buyer's bucket (the edge learns the split from the
//!   `Edgestock-Buckets` header and then calls the bucket itself), lends
//!   units to a bucket that runs short (calling the others' back first if
//!   its own are too few), answers reads with every bucket's counts added,
//!   and pushes those sums to its feeds.
//! - A **bucket** borrows from its parent before a step that wants more
//!   than it has, gives everything back when asked (merging back), and
//!   tells its parent its numbers (at the feeds' rate) for the live badge.
//! - Every move is a transfer: sent and saved with its outbox entry, then
//!   received keyed by its id, then dropped from the outbox. The alarm
//!   delivers whatever an outbox still holds, so a crash loses nothing.

use super::super::http::to_response;
use super::super::stubs::{SkuCall, SkuClient, SkuOp};
use super::{now_ms, Failure, SkuObject};
use crate::api::wire::sku_json;
use crate::api::{ApiError, HttpReply};
use crate::domain::buckets::{self, Node};
use crate::domain::event::Event;
use crate::domain::stock::{
    Actor, Command, Outcome, Reply, Request as StockRequest, SkuRecord, StockError,
};
use crate::domain::store::Store;
use crate::domain::types::{IdempotencyKey, SkuId, TransferId, Units};
use serde_json::json;
use std::collections::HashMap;
use worker::{console_error, Response, Result};

/// A transfer's outbox entry older than this is delivered by the alarm (a
/// younger one is most likely still being delivered by its call).
pub(super) const REDELIVER_AFTER_MS: u64 = 2_000;

/// The split state a parent keeps in memory: the latest numbers each bucket
/// told it, for the sums it answers and pushes.
#[derive(Default)]
pub(super) struct Buckets {
    pub(super) states: HashMap<u16, SkuRecord>,
    /// A setup is counting the SKU's units: no lending meanwhile, so no
    /// unit moves between the counts it adds up.
    pub(super) counting: bool,
}

impl SkuObject {
    /// Serves one call: a bucket's, or the SKU's own (the parent).
    pub(super) async fn serve(&self, call: SkuCall) -> Result<Response> {
        match call.bucket {
            Some(bucket) => self.serve_bucket(bucket, call).await,
            None => self.serve_parent(call).await,
        }
    }

    async fn serve_bucket(&self, bucket: u16, call: SkuCall) -> Result<Response> {
        match &call.op {
            SkuOp::Yield => {
                let sent = self.send_units(&call.sku, Node::Parent, u64::MAX).await;
                return to_response(&HttpReply::json(200, json!({ "sent": sent })));
            }
            SkuOp::Get => {
                // The bucket's own record, whole (the parent adds them up).
                let record = self.record_now(&call.sku);
                return to_response(&match record {
                    Some(r) => HttpReply::json(200, serde_json::to_value(r).unwrap_or_default()),
                    None => ApiError::Stock(StockError::SkuNotFound).to_reply(),
                });
            }
            _ => {}
        }
        let wanted = units_wanted(&call.op);
        if wanted > 0 {
            let available = self
                .with_record(&call.sku, SkuRecord::available)
                .unwrap_or(0);
            if available < wanted {
                self.borrow(&call.sku, bucket, wanted - available).await;
            }
            if self.with_record(&call.sku, |_| ()).is_none() {
                // Never given a unit, and none to borrow: the SKU is short.
                let short = StockError::InsufficientStock {
                    requested: wanted,
                    available: 0,
                };
                return to_response(&ApiError::Stock(short).to_reply());
            }
        }
        self.answer(call).await
    }

    async fn serve_parent(&self, call: SkuCall) -> Result<Response> {
        match &call.op {
            SkuOp::Split { buckets } => return self.split(&call.sku, *buckets).await,
            SkuOp::Lend { bucket, short } => {
                let sent = self.lend(&call.sku, *bucket, *short).await;
                return to_response(&HttpReply::json(200, json!({ "sent": sent })));
            }
            SkuOp::BucketState { bucket, record } => {
                self.bucket_told(*bucket, record.clone());
                return to_response(&HttpReply::json(200, json!({ "ok": true })));
            }
            _ => {}
        }
        // Read in place: this runs on every call to every SKU.
        let split = self.with_record(&call.sku, |r| r.buckets).unwrap_or(0);
        if split == 0 {
            return self.answer(call).await;
        }
        if let SkuOp::Get = call.op {
            let total = self.total(&call.sku, split).await;
            let mut response = to_response(&match total {
                Some(total) => HttpReply::json(200, split_json(&total, split)),
                None => ApiError::Internal.to_reply(),
            })?;
            response
                .headers_mut()
                .set("Edgestock-Buckets", &split.to_string())?;
            return Ok(response);
        }
        if let SkuOp::Step { request } = &call.op {
            if let Command::Setup(_) = request.command {
                return self.setup_split(call, split).await;
            }
        }
        if let SkuOp::Subscribe { .. } = call.op {
            // A new feed's first state is the SKU's sums, as every push is.
            let sku = call.sku.clone();
            let reply = self.handle(call);
            if reply.status != 200 {
                return to_response(&reply);
            }
            return to_response(&match self.total(&sku, split).await {
                Some(total) => HttpReply::json(
                    200,
                    serde_json::to_value(Event::stock(&total)).unwrap_or_default(),
                ),
                None => reply,
            });
        }
        if let SkuOp::Batch { requests } = &call.op {
            return self.pass_batch(&call, requests, split).await;
        }
        let (bucket, call) = self.route(call, split);
        match bucket {
            Some(bucket) => self.pass_on(call, bucket, split).await,
            None => self.answer(call).await,
        }
    }

    /// Passes a call on to a bucket, and its answer back (with the split
    /// for the edge to learn). A bucket that does not know the hold named
    /// (404) leaves the call to this object.
    async fn pass_on(&self, mut call: SkuCall, bucket: u16, split: u16) -> Result<Response> {
        call.bucket = Some(bucket);
        let mut response = SkuClient::send(&self.env, &call).await?;
        let status = response.status_code();
        if status == 404 {
            call.bucket = None;
            return self.answer(call).await;
        }
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        let mut fresh = Response::from_bytes(body)?.with_status(status);
        let copy = fresh.headers_mut();
        for (name, value) in headers.entries() {
            copy.set(&name, &value)?;
        }
        if split > 0 {
            // What the edge keeps so that it calls the bucket itself next time.
            copy.set("Edgestock-Buckets", &split.to_string())?;
        }
        Ok(fresh)
    }

    /// Where a call goes on a split SKU (`split` > 0): its buyer's bucket
    /// for new units (a hold id drawn at the edge is made to name that
    /// bucket); for an existing hold this object does not have, the bucket
    /// the order's buyer or the hold id names (on a SKU merged back too,
    /// `split` 0). None: it stays here.
    fn route(&self, mut call: SkuCall, split: u16) -> (Option<u16>, SkuCall) {
        let hint = match (&call.buyer, split) {
            (Some(buyer), 1..) => Some(buckets::bucket_for(buyer, split)),
            _ => None,
        };
        let named_in = split;
        let bucket = match &mut call.op {
            SkuOp::Step { request } | SkuOp::Apply { request } | SkuOp::Replay { request, .. }
                if self.answered_here(request) =>
            {
                None
            }
            SkuOp::Step { request } | SkuOp::Apply { request } | SkuOp::Replay { request, .. } => {
                match &mut request.command {
                    Command::Reserve { hold, buyer, .. } if split > 0 => {
                        let bucket = buckets::bucket_for(buyer, split);
                        *hold = buckets::mark_hold(hold, bucket);
                        Some(bucket)
                    }
                    Command::Place { buyer, .. } | Command::Sell { buyer, .. } if split > 0 => {
                        Some(buckets::bucket_for(buyer, split))
                    }
                    Command::Commit { hold }
                    | Command::Release { hold }
                    | Command::Return { hold } => self.elsewhere(hold, named_in, hint),
                    _ => None,
                }
            }
            SkuOp::GetHold { hold, .. } => self.elsewhere(hold, named_in, hint),
            _ => None,
        };
        (bucket, call)
    }

    /// Whether this object already answered `request`'s key (before the
    /// split): a retry is answered from here, not run again in a bucket.
    fn answered_here(&self, request: &StockRequest) -> bool {
        let Some(key) = request.replay_key() else {
            return false;
        };
        self.with_stock(None, |store, stock| {
            Ok(stock.replay(&key).is_some() || store.load_replay(&key)?.is_some())
        })
        .unwrap_or(false)
    }

    /// The bucket that may hold `hold` (the hint, or the one its id names
    /// among `named_in`), unless this object has it.
    fn elsewhere(
        &self,
        hold: &crate::domain::types::ReservationId,
        named_in: u16,
        hint: Option<u16>,
    ) -> Option<u16> {
        let candidate = hint.or_else(|| buckets::bucket_of_hold(hold, named_in))?;
        let here = self
            .with_stock(None, |store, stock| {
                Ok(stock.hold(hold).is_some() || store.load_hold(hold)?.is_some())
            })
            .unwrap_or(false);
        (!here).then_some(candidate)
    }

    /// A merged batch that reached the parent of a split SKU: each request
    /// to its bucket, the answers put back in order.
    async fn pass_batch(
        &self,
        call: &SkuCall,
        requests: &[StockRequest],
        split: u16,
    ) -> Result<Response> {
        let mut groups: HashMap<Option<u16>, Vec<(usize, StockRequest)>> = HashMap::new();
        for (i, request) in requests.iter().enumerate() {
            let single = SkuCall {
                sku: call.sku.clone(),
                bucket: None,
                buyer: call.buyer.clone(),
                op: SkuOp::Apply {
                    request: request.clone(),
                },
            };
            let (
                bucket,
                SkuCall {
                    op: SkuOp::Apply { request },
                    ..
                },
            ) = self.route(single, split)
            else {
                continue;
            };
            groups.entry(bucket).or_default().push((i, request));
        }
        let mut replies: Vec<Option<Reply>> = vec![None; requests.len()];
        for (bucket, group) in groups {
            let (places, batch): (Vec<usize>, Vec<StockRequest>) = group.into_iter().unzip();
            let answers = match bucket {
                None => {
                    let local =
                        SkuCall::new(call.sku.clone(), None, SkuOp::Batch { requests: batch });
                    let reply = self.handle(local);
                    (reply.status == 200)
                        .then(|| serde_json::from_value::<Vec<Reply>>(reply.body).ok())
                        .flatten()
                }
                Some(b) => {
                    let remote =
                        SkuCall::new(call.sku.clone(), Some(b), SkuOp::Batch { requests: batch });
                    match SkuClient::send(&self.env, &remote).await {
                        Ok(mut r) if r.status_code() == 200 => r.json::<Vec<Reply>>().await.ok(),
                        _ => None,
                    }
                }
            };
            let Some(answers) = answers else {
                return to_response(&ApiError::Internal.to_reply());
            };
            for (place, answer) in places.into_iter().zip(answers) {
                replies[place] = Some(answer);
            }
        }
        let replies: Option<Vec<Reply>> = replies.into_iter().collect();
        let mut response = to_response(&match replies {
            Some(replies) => {
                HttpReply::json(200, serde_json::to_value(replies).unwrap_or_default())
            }
            None => ApiError::Internal.to_reply(),
        })?;
        response
            .headers_mut()
            .set("Edgestock-Buckets", &split.to_string())?;
        Ok(response)
    }

    /// Splits the SKU `buckets` ways (each bucket gets its share now, the
    /// parent keeps one to lend from), or (0) merges the buckets back:
    /// every bucket's available comes home. A split SKU stays split: its
    /// buckets keep their buyers' tallies, holds and stored answers, and
    /// borrow what they need.
    async fn split(&self, sku: &SkuId, wanted: u16) -> Result<Response> {
        let Some(record) = self.record_now(sku) else {
            return to_response(&ApiError::Stock(StockError::SkuNotFound).to_reply());
        };
        let current = record.buckets;
        if wanted > 0 {
            if let Err(refusal) = self.apply_here(sku, Command::Split { buckets: wanted }) {
                return to_response(&refusal);
            }
            if current == 0 {
                let share = buckets::initial_share(record.available(), wanted);
                for bucket in 0..wanted {
                    self.send_units(sku, Node::Bucket(bucket), share).await;
                }
            }
        } else if current > 0 {
            // Merging back: every unsold unit comes home; the buckets keep
            // their holds, sales and buyers, and borrow when asked again.
            self.call_back(sku, (0..current).collect()).await;
        }
        let split = self.with_record(sku, |r| r.buckets).unwrap_or(0);
        let total = if split == 0 {
            self.record_now(sku)
        } else {
            self.total(sku, split).await
        };
        to_response(&match total {
            Some(total) => HttpReply::json(200, split_json(&total, split)),
            None => ApiError::Internal.to_reply(),
        })
    }

    /// A setup of a split SKU: its `on_hand` is the SKU's, not the
    /// parent's. The buckets' available units come home first (so only
    /// their holds and sales stay there); the parent then takes what the
    /// buckets do not hold, and the settings go to every bucket with a
    /// transfer of no units.
    async fn setup_split(&self, mut call: SkuCall, split: u16) -> Result<Response> {
        let sku = call.sku.clone();
        self.split.borrow_mut().counting = true;
        self.call_back(&sku, (0..split).collect()).await;
        let total = self.total(&sku, split).await;
        self.split.borrow_mut().counting = false;
        let Some(total) = total else {
            return to_response(&ApiError::Internal.to_reply());
        };
        let Some(parent) = self.record_now(&sku) else {
            return to_response(&ApiError::Stock(StockError::SkuNotFound).to_reply());
        };
        // Units on their way are the SKU's too: in an outbox, in nobody's
        // counts yet.
        let in_flight: u64 = parent.in_flight()
            + self
                .split
                .borrow()
                .states
                .values()
                .map(SkuRecord::in_flight)
                .sum::<u64>();
        let in_buckets = (total.on_hand + in_flight).saturating_sub(parent.on_hand);
        if let SkuOp::Step { request } = &mut call.op {
            if let Command::Setup(spec) = &mut request.command {
                let requested = spec.on_hand.get();
                let Some(own) = requested
                    .checked_sub(in_buckets)
                    .and_then(|n| Units::parse(n).ok())
                else {
                    let refusal = StockError::OnHandBelowCommitted {
                        requested,
                        reserved: total.reserved,
                        sold: total.sold,
                    };
                    return to_response(&ApiError::Stock(refusal).to_reply());
                };
                spec.on_hand = own;
            }
        }
        let reply = self.handle(call);
        if reply.status >= 300 {
            return to_response(&reply);
        }
        let settings = self.record_now(&sku).map(|r| r.settings);
        let told = (0..split).map(|bucket| {
            let sku = sku.clone();
            async move {
                let Ok(random) = random_bytes() else {
                    return;
                };
                let transfer = TransferId::from_bytes(random);
                let (Ok(key), Ok(none)) =
                    (IdempotencyKey::parse(transfer.as_str()), Units::parse(0))
                else {
                    return;
                };
                let call = SkuCall::new(
                    sku.clone(),
                    Some(bucket),
                    SkuOp::Apply {
                        request: StockRequest {
                            key: Some(key),
                            fingerprint: String::new(),
                            actor: Actor::Admin,
                            command: Command::Receive {
                                transfer,
                                qty: none,
                                settings,
                            },
                        },
                    },
                );
                if let Err(e) = SkuClient::send(&self.env, &call).await {
                    console_error!("sku {sku}: bucket {bucket} missed the new settings: {e}");
                }
            }
        });
        futures_util::future::join_all(told).await;
        let total = self.total(&sku, split).await;
        to_response(&match total {
            Some(total) => HttpReply::json(reply.status, split_json(&total, split)),
            None => reply,
        })
    }

    /// A bucket is `short`: send it what it needs and a refill, calling the
    /// other buckets' available back first if this object has too few.
    async fn lend(&self, sku: &SkuId, bucket: u16, short: u64) -> u64 {
        let Some(record) = self.record_now(sku) else {
            return 0;
        };
        if self.split.borrow().counting {
            // A setup is counting the units; the bucket asks again later.
            return 0;
        }
        let split = record.buckets.max(bucket + 1);
        if record.available() < short {
            self.call_back(sku, (0..split).filter(|&b| b != bucket).collect())
                .await;
        }
        let pool = self.with_record(sku, SkuRecord::available).unwrap_or(0);
        let grant = buckets::grant(pool, short, split);
        self.send_units(sku, Node::Bucket(bucket), grant).await
    }

    /// Asks `from` buckets, all at once, to send their available units home.
    async fn call_back(&self, sku: &SkuId, from: Vec<u16>) {
        for (bucket, answer) in self.ask_buckets(sku, from, || SkuOp::Yield).await {
            if let Err(e) = answer {
                console_error!("sku {sku}: bucket {bucket} did not give back: {e}");
            }
        }
    }

    /// Sends `op` to each of `buckets` at once; their answers, in order.
    async fn ask_buckets(
        &self,
        sku: &SkuId,
        buckets: Vec<u16>,
        op: impl Fn() -> SkuOp,
    ) -> Vec<(u16, Result<Response>)> {
        let calls = buckets.into_iter().map(|bucket| {
            let call = SkuCall::new(sku.clone(), Some(bucket), op());
            async move { (bucket, SkuClient::send(&self.env, &call).await) }
        });
        futures_util::future::join_all(calls).await
    }

    /// A bucket asks its parent for `short` units (and whatever refill the
    /// parent adds); they arrive as a transfer before the answer.
    async fn borrow(&self, sku: &SkuId, bucket: u16, short: u64) {
        let call = SkuCall::new(sku.clone(), None, SkuOp::Lend { bucket, short });
        if let Err(e) = SkuClient::send(&self.env, &call).await {
            console_error!("sku {sku}: bucket {bucket} could not borrow: {e}");
        }
    }

    /// Moves up to `up_to` available units from here to `to`: sent (saved
    /// with the outbox entry), received there (keyed by the transfer), then
    /// dropped from the outbox. Returns the units sent (in the outbox if
    /// the receiver could not be reached: the alarm delivers them).
    pub(super) async fn send_units(&self, sku: &SkuId, to: Node, up_to: u64) -> u64 {
        let Ok(up_to) = Units::parse(up_to.min(Units::MAX)) else {
            return 0;
        };
        let Ok(random) = random_bytes() else {
            return 0;
        };
        let transfer = TransferId::from_bytes(random);
        let key = IdempotencyKey::parse(&format!("send:{}", transfer.as_str())).ok();
        let request = StockRequest {
            key,
            fingerprint: String::new(),
            actor: Actor::System,
            command: Command::Send {
                transfer: transfer.clone(),
                to,
                up_to,
            },
        };
        let sent = match self.step_here(sku, request) {
            Ok(Ok(Outcome::Moved { qty, .. })) => qty,
            _ => return 0,
        };
        if sent > 0 {
            // The alarm is pointed at the outbox before the units leave, so
            // a crash while delivering still gets them delivered.
            self.sync_alarm().await;
            self.deliver(sku, to, &transfer, sent).await;
        }
        sent
    }

    /// Hands a transfer to its receiver; once it has it, the outbox entry
    /// goes. Safe to repeat: the receiver adds each transfer once.
    pub(super) async fn deliver(&self, sku: &SkuId, to: Node, transfer: &TransferId, qty: u64) {
        let settings = match to {
            Node::Bucket(_) => self.record_now(sku).map(|r| r.settings),
            Node::Parent => None,
        };
        let (Ok(qty), Ok(key)) = (Units::parse(qty), IdempotencyKey::parse(transfer.as_str()))
        else {
            return;
        };
        let call = SkuCall {
            sku: sku.clone(),
            bucket: match to {
                Node::Parent => None,
                Node::Bucket(b) => Some(b),
            },
            buyer: None,
            op: SkuOp::Apply {
                request: StockRequest {
                    key: Some(key),
                    fingerprint: String::new(),
                    actor: Actor::System,
                    command: Command::Receive {
                        transfer: transfer.clone(),
                        qty,
                        settings,
                    },
                },
            },
        };
        let received = match SkuClient::send(&self.env, &call).await {
            Ok(mut r) if r.status_code() == 200 => {
                matches!(r.json::<Reply>().await, Ok(Ok(_)))
            }
            Ok(r) => {
                console_error!(
                    "sku {sku}: transfer {transfer} answered {}",
                    r.status_code()
                );
                false
            }
            Err(e) => {
                console_error!("sku {sku}: transfer {transfer} not delivered: {e}");
                false
            }
        };
        if received {
            let request = StockRequest {
                key: None,
                fingerprint: String::new(),
                actor: Actor::System,
                command: Command::Delivered {
                    transfer: transfer.clone(),
                },
            };
            let _ = self.step_here(sku, request);
        }
    }

    /// The alarm's share: every outbox entry old enough delivered again.
    pub(super) async fn redeliver(&self) {
        let Some(record) = self
            .stock
            .borrow()
            .as_ref()
            .and_then(|s| s.record().cloned())
        else {
            return;
        };
        let now = now_ms();
        for transfer in &record.outbox {
            if transfer.at_ms + REDELIVER_AFTER_MS <= now {
                self.deliver(&record.sku, transfer.to, &transfer.id, transfer.qty)
                    .await;
            }
        }
    }

    /// The split SKU's numbers: the parent's own plus every bucket's, asked
    /// of the buckets now (and kept for the live badge).
    pub(super) async fn total(&self, sku: &SkuId, split: u16) -> Option<SkuRecord> {
        for (bucket, answer) in self
            .ask_buckets(sku, (0..split).collect(), || SkuOp::Get)
            .await
        {
            match answer {
                Ok(mut r) if r.status_code() == 200 => {
                    if let Ok(record) = r.json::<SkuRecord>().await {
                        self.bucket_told(bucket, record);
                    }
                }
                // A bucket never given units has none.
                Ok(r) if r.status_code() == 404 => {}
                Ok(r) => {
                    console_error!("sku {sku}: bucket {bucket} answered {}", r.status_code());
                    return None;
                }
                Err(e) => {
                    console_error!("sku {sku}: bucket {bucket}: {e}");
                    return None;
                }
            }
        }
        self.sum_known(sku)
    }

    /// The parent's record with the buckets' latest known numbers added.
    pub(super) fn sum_known(&self, sku: &SkuId) -> Option<SkuRecord> {
        let record = self.record_now(sku)?;
        let split = self.split.borrow();
        Some(buckets::aggregate(&record, split.states.values()))
    }

    /// A bucket's latest numbers: kept, and the sum pushed to the feeds.
    fn bucket_told(&self, bucket: u16, record: SkuRecord) {
        {
            let mut split = self.split.borrow_mut();
            let newer = split
                .states
                .get(&bucket)
                .is_none_or(|known| known.version <= record.version);
            if !newer {
                return;
            }
            split.states.insert(bucket, record);
        }
        // Pushed after the call (push_split_total), once the sum is whole.
        self.pusher.split_changed.set(true);
    }

    /// The loaded record (loading it if need be), None if never set up.
    fn record_now(&self, sku: &SkuId) -> Option<SkuRecord> {
        self.with_record(sku, SkuRecord::clone)
    }

    /// `read` over the loaded record, in place (no copy).
    fn with_record<T>(&self, sku: &SkuId, read: impl FnOnce(&SkuRecord) -> T) -> Option<T> {
        self.with_stock(Some(sku), |_, stock| Ok(stock.record().map(read)))
            .ok()
            .flatten()
    }

    /// One request applied here, saved; the core's reply.
    fn step_here(&self, sku: &SkuId, request: StockRequest) -> std::result::Result<Reply, Failure> {
        self.with_stock(Some(sku), |store, stock| {
            let mut replies =
                super::run(store, stock, std::slice::from_ref(&request), &self.pusher)?;
            Ok(replies.pop().unwrap_or(Err(StockError::SkuNotFound)))
        })
    }

    /// An admin-side command applied here; a refusal as its HTTP problem.
    fn apply_here(&self, sku: &SkuId, command: Command) -> std::result::Result<(), HttpReply> {
        let request = StockRequest {
            key: None,
            fingerprint: String::new(),
            actor: Actor::Admin,
            command,
        };
        match self.step_here(sku, request) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ApiError::Stock(e).to_reply()),
            Err(failure) => Err(failure.reply(sku)),
        }
    }
}

/// A split SKU as the API shows it: the sums, and how many buckets.
fn split_json(total: &SkuRecord, buckets: u16) -> serde_json::Value {
    let mut body = sku_json(total);
    body["buckets"] = json!(buckets);
    body
}

/// How many units a call's requests want to take (reservations, order
/// lines, sales): what a bucket makes sure it has before the step.
fn units_wanted(op: &SkuOp) -> u64 {
    let wants = |request: &StockRequest| match &request.command {
        Command::Reserve { qty, .. } | Command::Place { qty, .. } | Command::Sell { qty, .. } => {
            qty.get()
        }
        _ => 0,
    };
    match op {
        SkuOp::Step { request } | SkuOp::Apply { request } => wants(request),
        SkuOp::Batch { requests } => requests.iter().map(wants).sum(),
        _ => 0,
    }
}

fn random_bytes() -> std::result::Result<[u8; 16], getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

/// A bucket's numbers, told to its parent for the live badge.
pub(super) fn bucket_state_call(sku: &SkuId, bucket: u16, record: SkuRecord) -> SkuCall {
    SkuCall::new(sku.clone(), None, SkuOp::BucketState { bucket, record })
}
