//! Risk tables: each rule kind fires exactly past its threshold, with the
//! numbers it saw; rule sets are checked before they can be used.

use super::live::RoomId;
use super::risk::*;
use super::types::BuyerId;
use serde_json::json;

const NOW: u64 = 1_800_000_000_000;

fn set(rules: serde_json::Value) -> RuleSet {
    RuleSet::parse(json!({ "rules": rules }).to_string().as_bytes(), 7).expect("valid rules")
}

fn history(ages_s: &[u64], buyers: &[&str]) -> History {
    let mut h = History::default();
    for (i, age) in ages_s.iter().rev().enumerate() {
        h.note(Seen {
            at_ms: NOW - age * 1000,
            buyer: buyers[i % buyers.len()].to_owned(),
        });
    }
    h
}

fn facts(units: u64) -> Facts {
    Facts {
        now_ms: NOW,
        buyer: Some(BuyerId::parse("viewer-1").unwrap()),
        units,
        ..Facts::default()
    }
}

#[test]
fn velocity_fires_past_max_within_the_window_only() {
    let rules = set(json!([{ "id": "fast", "action": "review",
        "check": { "velocity": { "subject": "buyer", "max": 3, "window_s": 60 } } }]));
    // (attempt ages in seconds, verdict)
    let table: &[(&[u64], Verdict)] = &[
        (&[0, 10, 20], Verdict::Allow),
        (&[0, 10, 20, 30], Verdict::Review),
        (&[0, 10, 20, 61, 90], Verdict::Allow),
    ];
    for (ages, verdict) in table {
        let f = Facts {
            buyer_history: Some(history(ages, &["b"])),
            ..facts(1)
        };
        let d = evaluate(&rules, &f, Judged::Order);
        assert_eq!(d.verdict, *verdict, "{ages:?}");
        assert_eq!(d.rules_version, 7);
        if *verdict == Verdict::Review {
            assert_eq!(d.fired[0].rule, "fast");
            assert_eq!((d.fired[0].observed, d.fired[0].limit), (4, 3));
            assert!(d.fired[0].reason.contains("4 orders from this buyer"));
        } else {
            assert!(d.fired.is_empty());
        }
    }
}

#[test]
fn shared_devices_count_distinct_buyers() {
    let rules = set(json!([{ "id": "farm", "action": "deny",
        "check": { "shared_by": { "subject": "device", "max_buyers": 2, "window_s": 3600 } } }]));
    let same = Facts {
        device_history: Some(history(&[0, 1, 2, 3, 4], &["a", "a", "b"])),
        ..facts(1)
    };
    assert_eq!(
        evaluate(&rules, &same, Judged::Order).verdict,
        Verdict::Allow
    );
    let farm = Facts {
        device_history: Some(history(&[0, 1, 2], &["a", "b", "c"])),
        ..facts(1)
    };
    let d = evaluate(&rules, &farm, Judged::Order);
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!((d.fired[0].observed, d.fired[0].limit), (3, 2));
}

#[test]
fn new_accounts_are_held_to_small_quantities() {
    let rules = set(json!([{ "id": "new", "action": "review",
        "check": { "new_account": { "younger_than_s": 86400, "max_units": 2 } } }]));
    let now_s = NOW / 1000;
    // (account age s or none, units, verdict)
    let table = [
        (Some(3_600), 2, Verdict::Allow),
        (Some(3_600), 3, Verdict::Review),
        (Some(86_400), 3, Verdict::Allow),
        (None, 30, Verdict::Allow),
    ];
    for (age, units, verdict) in table {
        let f = Facts {
            account_created_s: age.map(|a| now_s - a),
            ..facts(units)
        };
        assert_eq!(
            evaluate(&rules, &f, Judged::Order).verdict,
            verdict,
            "{age:?} {units}"
        );
    }
}

#[test]
fn buyers_who_never_pay_are_reviewed() {
    let rules = set(json!([{ "id": "squatter", "action": "review",
        "check": { "unpaid_history": { "min_expired": 2, "window_s": 3600 } } }]));
    let mut h = History::default();
    h.note_expired(NOW - 4_000_000); // outside the window
    h.note_expired(NOW - 1_000);
    let f = |h: &History| Facts {
        buyer_history: Some(h.clone()),
        ..facts(1)
    };
    assert_eq!(
        evaluate(&rules, &f(&h), Judged::Order).verdict,
        Verdict::Allow
    );
    h.note_expired(NOW - 500);
    let d = evaluate(&rules, &f(&h), Judged::Order);
    assert_eq!(d.verdict, Verdict::Review);
    assert_eq!((d.fired[0].observed, d.fired[0].limit), (2, 2));
}

#[test]
fn blocklists_deny_and_say_what_was_listed() {
    let rules = set(json!([{ "id": "banned", "action": "deny",
        "check": { "blocklist": { "devices": ["dev-bad"], "addresses": ["203.0.113.9"] } } }]));
    let by_device = Facts {
        device: Some("dev-bad".into()),
        ..facts(1)
    };
    let d = evaluate(&rules, &by_device, Judged::Reservation);
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.fired[0].reason, "the device is blocklisted");
    let by_address = Facts {
        address: Some("203.0.113.9".into()),
        ..facts(1)
    };
    assert_eq!(
        evaluate(&rules, &by_address, Judged::Order).verdict,
        Verdict::Deny
    );
    assert_eq!(
        evaluate(&rules, &facts(1), Judged::Order).verdict,
        Verdict::Allow
    );
}

#[test]
fn the_strictest_rule_wins_and_every_fired_rule_is_named() {
    let rules = set(json!([
        { "id": "big", "action": "review", "check": { "large_order": { "max_units": 5 } } },
        { "id": "banned", "action": "deny", "check": { "blocklist": { "buyers": ["viewer-1"] } } }
    ]));
    let d = evaluate(&rules, &facts(6), Judged::Order);
    assert_eq!(d.verdict, Verdict::Deny);
    let names: Vec<&str> = d.fired.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(names, ["big", "banned"]);
}

#[test]
fn reservations_meet_only_deny_rules_that_need_no_history() {
    let rules = set(json!([
        { "id": "big", "action": "review", "check": { "large_order": { "max_units": 1 } } },
        { "id": "fast", "action": "deny",
          "check": { "velocity": { "subject": "buyer", "max": 1, "window_s": 60 } } },
        { "id": "huge", "action": "deny", "check": { "large_order": { "max_units": 9 } } }
    ]));
    let f = Facts {
        buyer_history: Some(history(&[0, 1, 2], &["b"])),
        ..facts(5)
    };
    assert_eq!(
        evaluate(&rules, &f, Judged::Reservation).verdict,
        Verdict::Allow
    );
    assert_eq!(
        evaluate(&rules, &facts(10), Judged::Reservation).verdict,
        Verdict::Deny
    );
    assert_eq!(evaluate(&rules, &f, Judged::Order).verdict, Verdict::Deny);
}

#[test]
fn rules_can_cover_some_rooms_only() {
    let rules = set(
        json!([{ "id": "big", "action": "review", "rooms": ["launch"],
        "check": { "large_order": { "max_units": 1 } } }]),
    );
    let in_room = Facts {
        room: Some(RoomId::parse("launch").unwrap()),
        ..facts(2)
    };
    assert_eq!(
        evaluate(&rules, &in_room, Judged::Order).verdict,
        Verdict::Review
    );
    assert_eq!(
        evaluate(&rules, &facts(2), Judged::Order).verdict,
        Verdict::Allow
    );
}

#[test]
fn bad_rule_sets_are_refused_with_the_reason() {
    let table = [
        (
            json!({"rules": [{"id": "x", "action": "maybe", "check": {"large_order": {"max_units": 1}}}]}),
            "unknown variant",
        ),
        (
            json!({"rules": [{"id": "x", "action": "deny", "check": {"large_order": {"max_units": 0}}}]}),
            "rule 'x': max_units",
        ),
        (
            json!({"rules": [{"id": "x", "action": "deny", "check": {"velocity": {"subject": "buyer", "max": 1, "window_s": 0}}}]}),
            "window_s",
        ),
        (
            json!({"rules": [{"id": "x", "action": "deny", "check": {"shared_by": {"subject": "buyer", "max_buyers": 1, "window_s": 9}}}]}),
            "device or address",
        ),
        (
            json!({"rules": [{"id": "x", "action": "deny", "check": {"blocklist": {}}}]}),
            "lists something",
        ),
        (
            json!({"rules": [{"id": "Bad Id", "action": "deny", "check": {"large_order": {"max_units": 1}}}]}),
            "rule id",
        ),
        (
            json!({"rules": [
            {"id": "x", "action": "deny", "check": {"large_order": {"max_units": 1}}},
            {"id": "x", "action": "deny", "check": {"large_order": {"max_units": 2}}}]}),
            "used twice",
        ),
        (
            json!({"rules": [{"id": "x", "action": "deny", "check": {"large_order": {"max_units": 1, "extra": 1}}}]}),
            "unknown field",
        ),
        (json!({"rules": [], "review_hold_s": 5}), "review_hold_s"),
        (json!({"rulez": []}), "unknown field"),
    ];
    for (body, expected) in table {
        let err = RuleSet::parse(body.to_string().as_bytes(), 1).unwrap_err();
        assert!(err.0.contains(expected), "{body}: {}", err.0);
    }
}

#[test]
fn the_defaults_pass_their_own_check_and_round_trip() {
    let defaults = RuleSet::defaults();
    let body = json!({ "rules": defaults.rules, "review_hold_s": defaults.review_hold_s });
    let again = RuleSet::parse(body.to_string().as_bytes(), 0).unwrap();
    assert_eq!(again, defaults);
}

#[test]
fn a_history_is_bounded_in_count_and_age() {
    let mut h = History::default();
    for i in 0..(HISTORY_MAX as u64 + 50) {
        h.note(Seen {
            at_ms: NOW + i,
            buyer: "b".into(),
        });
    }
    assert_eq!(h.seen.len(), HISTORY_MAX);
    h.note(Seen {
        at_ms: NOW + HISTORY_MS + 1_000,
        buyer: "b".into(),
    });
    assert_eq!(h.seen.len(), 1);
}

#[test]
fn a_rule_set_read_back_is_a_valid_rule_set() {
    // Found by the fuzzer: GET's document (with its version) was refused by
    // PUT as an unknown field.
    let stored = RuleSet::parse(br#"{"rules":[]}"#, 3).unwrap();
    let document = serde_json::to_vec(&stored).unwrap();
    let again = RuleSet::parse(&document, 4).unwrap();
    assert_eq!((again.version, again.rules.len()), (4, 0));
    let defaults = serde_json::to_vec(&RuleSet::defaults()).unwrap();
    assert_eq!(
        RuleSet::parse(&defaults, 1).unwrap().rules,
        RuleSet::defaults().rules
    );
}
