//! Seeded simulation of channel allocation (库存分配): several channels
//! sell one SKU at once, some from dedicated buckets, some shared with a
//! safety floor, a percentage or a maximum, while the merchant moves units
//! between buckets and the pool, restocks, writes off losses, and holds
//! expire, with crashes (reload from the store) in between.
//!
//! After every step: the core's invariants (dedicated units never more
//! than available among them), every successful take within what its
//! channel was shown just before, the sum of what channels may sell never
//! above `on_hand`, and a refused take changing nothing.
//!
//! `SIM_SEED=<seed> cargo test --test channels` replays one seed.

use edgestock::domain::allocation::{sellable, AllocationSpec};
use edgestock::domain::stock::{
    Actor, Command, LimitChange, Outcome, Request, SetupSpec, Stock, StockError,
};
use edgestock::domain::store;
use edgestock::domain::types::*;

mod common;
use common::{MemoryStore, Rng};

const CHANNELS: [&str; 4] = ["douyin", "kuaishou", "taobao", "wechat"];

fn channel(r: &mut Rng) -> Option<Channel> {
    match r.below(5) {
        4 => None, // the storefront
        n => Some(Channel::parse(CHANNELS[n as usize]).unwrap()),
    }
}

fn admin(command: Command) -> Request {
    Request {
        key: None,
        fingerprint: String::new(),
        actor: Actor::Admin,
        command,
    }
}

fn units(n: u64) -> Units {
    Units::parse(n).unwrap()
}

fn shown(stock: &Stock, channel: Option<&Channel>) -> u64 {
    let r = stock.record().unwrap();
    sellable(&r.channels, r.available(), channel)
}

fn simulate(seed: u64, steps: usize) -> (u64, u64) {
    let mut r = Rng(seed);
    let sku = SkuId::parse("sim").unwrap();
    let mut store = MemoryStore::default();
    let mut stock = store.reload(&sku);
    let setup = Command::Setup(SetupSpec {
        on_hand: units(200),
        low_stock_threshold: None,
        per_buyer_limit: LimitChange::Keep,
        hold_seconds: Some(HoldSeconds::parse(30).unwrap()),
        deduction: None,
        max_per_hold: None,
    });
    store::run(&mut store, &mut stock, 0, &[admin(setup)]).unwrap();
    let mut holds: Vec<ReservationId> = Vec::new();
    let (mut taken, mut refused) = (0, 0);
    let mut now = 1_000;
    for step in 0..steps {
        let at = || format!("seed {seed} step {step} (SIM_SEED={seed})");
        now += r.below(3_000);
        let who = channel(&mut r);
        let command = match r.below(100) {
            0..=9 => {
                let ch = who.clone().unwrap_or(Channel::parse("douyin").unwrap());
                let spec = match r.below(4) {
                    0 => None,
                    1 => Some(AllocationSpec {
                        dedicated: Some(units(r.below(60))),
                        safety_floor: units(0),
                        max_listed: None,
                        percent: None,
                    }),
                    _ => Some(AllocationSpec {
                        dedicated: None,
                        safety_floor: units(r.below(30)),
                        max_listed: r.chance(50).then(|| units(r.below(50))),
                        percent: r.chance(50).then(|| 1 + r.below(100) as u8),
                    }),
                };
                Command::Allocate { channel: ch, spec }
            }
            10..=14 => Command::Restock {
                qty: Quantity::parse(1 + r.below(20)).unwrap(),
                reason: None,
                reference: None,
            },
            15..=19 => Command::Adjust {
                delta: Delta::parse(-(1 + r.below(15) as i64)).unwrap(),
                reason: AdjustReason::Lost,
                note: None,
                reference: None,
            },
            20..=69 => {
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&r.next().to_le_bytes());
                let hold = ReservationId::from_random(bytes);
                holds.push(hold.clone());
                Command::Reserve {
                    hold,
                    buyer: BuyerId::parse(&format!("b{}", r.below(50))).unwrap(),
                    qty: Quantity::parse(1 + r.below(5)).unwrap(),
                    channel: who.clone(),
                }
            }
            70..=84 if !holds.is_empty() => Command::Commit {
                hold: holds[r.below(holds.len() as u64) as usize].clone(),
            },
            _ if !holds.is_empty() => Command::Release {
                hold: holds[r.below(holds.len() as u64) as usize].clone(),
            },
            _ => continue,
        };
        // Expire what is due first, so what the channel is shown is what
        // the command meets.
        store::run(&mut store, &mut stock, now, &[]).unwrap();
        let before = stock.record().unwrap().clone();
        let shown_before = shown(&stock, who.as_ref());
        let replies = match store::run(&mut store, &mut stock, now, &[admin(command.clone())]) {
            Ok(replies) => replies,
            Err(e) => panic!("{}: the store failed: {e:?}", at()),
        };
        let after = stock.record().unwrap().clone();
        let problems = stock.check_invariants();
        assert!(problems.is_empty(), "{}: {problems:?}", at());
        // Every unit in one place: dedicated buckets and the pool make up
        // exactly the available units, never more.
        assert!(after.channels.dedicated() <= after.available(), "{}", at());
        assert_eq!(
            after.channels.dedicated() + after.channels.pool(after.available()),
            after.available(),
            "{}",
            at()
        );
        for c in CHANNELS {
            let c = Channel::parse(c).unwrap();
            assert!(shown(&stock, Some(&c)) <= after.available(), "{}", at());
        }
        match (&command, &replies[0]) {
            (Command::Reserve { qty, channel, .. }, Ok(Outcome::Reserved { .. })) => {
                taken += 1;
                assert!(
                    qty.get() <= shown_before,
                    "{}: took {} of {shown_before}",
                    at(),
                    qty.get()
                );
                // A dedicated channel's units came out of its bucket.
                let bucket = |r: &edgestock::domain::stock::SkuRecord| {
                    channel
                        .as_ref()
                        .and_then(|c| r.channels.get(c))
                        .and_then(|a| a.dedicated)
                };
                if let (Some(b), Some(a)) = (bucket(&before), bucket(&after)) {
                    assert_eq!(a + qty.get(), b, "{}", at());
                }
            }
            (Command::Reserve { qty, .. }, Err(StockError::ChannelShort { sellable, .. })) => {
                refused += 1;
                assert!(qty.get() > shown_before, "{}", at());
                assert_eq!(*sellable, shown_before, "{}", at());
                assert_eq!(after, before, "{}: a refusal changed the SKU", at());
            }
            (Command::Reserve { .. }, Err(_)) => {
                assert_eq!(after, before, "{}: a refusal changed the SKU", at());
            }
            _ => {}
        }
        if r.chance(5) {
            stock = store.reload(&sku);
            let problems = stock.check_invariants();
            assert!(problems.is_empty(), "{} after reload: {problems:?}", at());
        }
    }
    (taken, refused)
}

#[test]
fn channels_never_sell_more_than_they_are_allotted() {
    let (seeds, steps): (Vec<u64>, usize) = match std::env::var("SIM_SEED") {
        Ok(s) => (vec![s.parse().expect("SIM_SEED is a number")], 2_000),
        Err(_) => ((1..=40).collect(), 600),
    };
    let (mut taken, mut refused) = (0, 0);
    for seed in seeds {
        let (t, f) = simulate(seed, steps);
        taken += t;
        refused += f;
    }
    // The workload reaches both sides of the rule.
    assert!(
        taken > 100 && refused > 100,
        "taken {taken}, refused {refused}"
    );
}
