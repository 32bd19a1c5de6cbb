//! Channel order intake: what a platform's message about one of its orders
//! asks of the edgestock order that mirrors it. Platforms resend and
//! reorder messages, so the rule is a function of where the order is and
//! where the platform says it is, never of the message's history: a
//! status the order has passed is a no-op, a status ahead of it is
//! reached by the order's own transitions (each idempotent at the SKUs),
//! and a unit is taken once however often the order arrives.

use super::order::{failure_words, Intent, Order, OrderStatus};
use crate::channels::{MessageResult, PlatformStatus};

/// What to do next for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A new order: create it from the message's lines and place it.
    Place,
    /// Cancelled or refunded before edgestock saw the order: record it
    /// closed, taking nothing, so a late "created" takes nothing either.
    CloseUnseen,
    /// Run this transition, then ask again.
    Run(Intent),
    /// Nothing more: answer this.
    Done(MessageResult),
}

/// The next thing to do for the platform's `target` status. `lines`:
/// whether the message names the order's lines (some platforms' status
/// messages carry ids only).
pub fn next(order: Option<&Order>, target: PlatformStatus, lines: bool, channel: &str) -> Next {
    use OrderStatus::*;
    use PlatformStatus as P;
    let Some(o) = order else {
        return match target {
            P::Cancelled | P::Refunded => Next::CloseUnseen,
            _ if !lines => Next::Done(MessageResult::Retry {
                reason: "edgestock has not seen this order and the message names no lines".into(),
            }),
            _ => Next::Place,
        };
    };
    let id = o.id.to_string();
    let accepted = || {
        Next::Done(MessageResult::Accepted {
            status: o.status.as_str().to_owned(),
            order: id.clone(),
        })
    };
    let ignored = |why: &str| {
        Next::Done(MessageResult::Ignored {
            reason: format!("{why} (the order is {})", o.status.as_str()),
        })
    };
    if o.pending.is_some() || o.status == Placing {
        return Next::Done(MessageResult::Retry {
            reason: "the order is between two states; send again shortly".into(),
        });
    }
    let paid_ref = format!("{channel}:{}", o.platform_order.as_deref().unwrap_or(""));
    match (target, o.status) {
        (_, Rejected) => Next::Done(MessageResult::Refused {
            reason: refusal(o),
            order: id,
        }),
        (P::Created, Reserved | PendingReview) => accepted(),
        (P::Created, _) => ignored("an older status"),
        (P::Paid, Reserved) => Next::Run(Intent::Pay {
            payment_ref: paid_ref,
            amount: None,
        }),
        (P::Paid, Paid | Shipped | Delivered) => accepted(),
        (P::Paid, Refunded) => ignored("an older status"),
        (P::Paid, Cancelled | Expired | Failed) => Next::Done(MessageResult::Refused {
            reason: format!(
                "paid on the platform after edgestock had let the units go (the order is {}): an oversell exception for the merchant",
                o.status.as_str()
            ),
            order: id,
        }),
        (P::Paid, PendingReview | Placing) => Next::Done(MessageResult::Retry {
            reason: "the order is not ready to be paid yet".into(),
        }),
        (P::Cancelled | P::Refunded, Reserved | PendingReview) => Next::Run(Intent::Cancel {
            reason: Some(format!("cancelled on {channel}")),
        }),
        (P::Cancelled, Paid) => Next::Run(Intent::Cancel {
            reason: Some(format!("cancelled on {channel}")),
        }),
        (P::Cancelled, Shipped | Delivered) => ignored("a shipped order is refunded, not cancelled"),
        (P::Refunded, Paid | Shipped | Delivered) => Next::Run(Intent::Refund {
            unopened: false,
            restock: true,
            reason: Some(format!("refunded on {channel}")),
        }),
        (P::Cancelled | P::Refunded, Cancelled | Expired | Failed | Refunded) => accepted(),
        (P::Cancelled | P::Refunded, Placing) => Next::Done(MessageResult::Retry {
            reason: "the order is still being placed".into(),
        }),
    }
}

/// Why the order could not be taken, in words for the platform's log.
fn refusal(o: &Order) -> String {
    let lines: Vec<String> = o
        .failed_lines()
        .iter()
        .map(|(line, why)| format!("{}: {}", line.sku, failure_words(why)))
        .collect();
    if lines.is_empty() {
        "edgestock refused the order".into()
    } else {
        format!("not taken, cancel it on the platform: {}", lines.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::types::{BuyerId, Channel, OrderId, Quantity, ReservationId, SkuId};

    fn order(status: OrderStatus) -> Order {
        let mut o = Order::new(
            OrderId::from_bytes([1; 16]),
            BuyerId::parse("b").unwrap(),
            Channel::parse("douyin").unwrap(),
            vec![(
                SkuId::parse("tee").unwrap(),
                Quantity::parse(1).unwrap(),
                ReservationId::from_random([2; 16]),
            )],
            String::new(),
            0,
        );
        o.pending = None;
        o.status = status;
        o.platform_order = Some("P1".into());
        o
    }

    #[test]
    fn a_platform_order_moves_forward_only() {
        use OrderStatus::*;
        use PlatformStatus as P;
        assert_eq!(next(None, P::Created, true, "douyin"), Next::Place);
        assert_eq!(next(None, P::Paid, true, "douyin"), Next::Place);
        assert!(matches!(
            next(None, P::Paid, false, "douyin"),
            Next::Done(MessageResult::Retry { .. })
        ));
        assert_eq!(next(None, P::Cancelled, false, "douyin"), Next::CloseUnseen);
        assert!(matches!(
            next(Some(&order(Reserved)), P::Paid, true, "douyin"),
            Next::Run(Intent::Pay { ref payment_ref, .. }) if payment_ref == "douyin:P1"
        ));
        // Created after paid: nothing.
        assert!(matches!(
            next(Some(&order(Paid)), P::Created, true, "douyin"),
            Next::Done(MessageResult::Ignored { .. })
        ));
        // Paid twice: accepted, nothing run.
        assert!(matches!(
            next(Some(&order(Paid)), P::Paid, true, "douyin"),
            Next::Done(MessageResult::Accepted { .. })
        ));
        assert!(matches!(
            next(Some(&order(Paid)), P::Refunded, true, "douyin"),
            Next::Run(Intent::Refund { restock: true, .. })
        ));
        assert!(matches!(
            next(Some(&order(Expired)), P::Paid, true, "douyin"),
            Next::Done(MessageResult::Refused { .. })
        ));
        assert!(matches!(
            next(Some(&order(Cancelled)), P::Created, true, "douyin"),
            Next::Done(MessageResult::Ignored { .. })
        ));
        assert!(matches!(
            next(Some(&order(Rejected)), P::Paid, true, "douyin"),
            Next::Done(MessageResult::Refused { .. })
        ));
    }
}
