//! Each adapter against messages signed the platform's way: accepted when
//! signed right, refused when any byte differs, parsed into the same
//! statuses, answered in the platform's words, and pushes signed so the
//! platform's own check passes.

use super::*;
use crate::api::session::sign_body;

const NOW: u64 = 1_790_000_000;

fn creds() -> Credentials<'static> {
    Credentials {
        app_key: "app-1",
        secret: b"s3cret",
        access_token: "tok",
    }
}

fn inbound<'a>(headers: &'a [(String, String)], query: &'a str, body: &'a [u8]) -> Inbound<'a> {
    Inbound {
        headers,
        query,
        body,
        now_s: NOW,
    }
}

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn order_of(m: &Message) -> (&str, PlatformStatus, usize) {
    match &m.body {
        MessageBody::Order {
            order,
            status,
            lines,
            ..
        } => (order.as_str(), *status, lines.len()),
        MessageBody::Other { .. } => ("", PlatformStatus::Created, 0),
    }
}

#[test]
fn generic_checks_the_edgestock_signature() {
    let body = br#"{"messages":[{"id":"m1","order":"P1","status":"paid","buyer":"u","lines":[{"sku":"tee","qty":2},{"sku":"tee","qty":1}]},{"id":"m2","type":"shipment"}]}"#;
    let good = h(&[("edgestock-signature", &sign_body(NOW, body, b"s3cret"))]);
    let a = Platform::Generic.adapter();
    a.verify(&creds(), &inbound(&good, "", body)).unwrap();
    let bad = h(&[("edgestock-signature", &sign_body(NOW, body, b"other"))]);
    assert!(matches!(
        a.verify(&creds(), &inbound(&bad, "", body)),
        Err(ChannelError::Signature(_))
    ));
    let msgs = a.parse(&inbound(&good, "", body)).unwrap();
    assert_eq!(order_of(&msgs[0]), ("P1", PlatformStatus::Paid, 1));
    assert!(matches!(msgs[1].body, MessageBody::Other { .. }));
    let MessageBody::Order { lines, .. } = &msgs[0].body else {
        panic!()
    };
    assert_eq!(lines[0].1.get(), 3, "lines of one SKU are merged");
    // Bad lines are a format error, not a panic.
    for body in [
        &br#"{"messages":[{"id":"m1","order":"P1","status":"paid","lines":[{"sku":"bad sku","qty":1}]}]}"#[..],
        br#"{"messages":[{"id":"m1","order":"P1","status":"paid","lines":[{"sku":"a","qty":0}]}]}"#,
        br#"{"messages":[]}"#,
        br#"{"messages":[{"id":"","order":"P1","status":"paid"}]}"#,
        br#"[1,2]"#,
    ] {
        assert!(matches!(
            a.parse(&inbound(&good, "", body)),
            Err(ChannelError::Format(_))
        ));
    }
    let answer = a.answer(&[(
        "m1".into(),
        MessageResult::Retry {
            reason: "later".into(),
        },
    )]);
    assert_eq!(answer.status, 503);
}

#[test]
fn douyin_signs_app_key_body_secret_and_batches() {
    let data = r#"{\"p_id\":4781320682406083640,\"sku_order_list\":[{\"code\":\"tee\",\"item_num\":2}],\"pay_amount\":3980}"#;
    let body = format!(
        r#"[{{"tag":"100","msg_id":"a1","data":"{data}"}},{{"tag":"101","msg_id":"a2","data":"{data}"}},{{"tag":"0","msg_id":"ping","data":"{{}}"}}]"#
    );
    let sign = douyin::event_sign("app-1", body.as_bytes(), b"s3cret");
    let good = h(&[
        ("event-sign", &sign),
        ("app-id", "app-1"),
        ("sign-method", "hmac-sha256"),
    ]);
    let a = Platform::Douyin.adapter();
    a.verify(&creds(), &inbound(&good, "", body.as_bytes()))
        .unwrap();
    let tampered = body.replace("\\\"item_num\\\":2", "\\\"item_num\\\":9");
    assert!(a
        .verify(&creds(), &inbound(&good, "", tampered.as_bytes()))
        .is_err());
    let md5 = h(&[("event-sign", &sign), ("sign-method", "md5")]);
    assert!(a
        .verify(&creds(), &inbound(&md5, "", body.as_bytes()))
        .is_err());
    let msgs = a.parse(&inbound(&good, "", body.as_bytes())).unwrap();
    assert_eq!(
        order_of(&msgs[0]),
        ("4781320682406083640", PlatformStatus::Created, 1)
    );
    assert_eq!(order_of(&msgs[1]).1, PlatformStatus::Paid);
    assert!(matches!(msgs[2].body, MessageBody::Other { .. }));
    assert_eq!(a.answer(&[]).body, r#"{"code":0,"msg":"success"}"#);
    // The push: sku.syncStock, a full number with the idempotent id, and a
    // sign the platform recomputes from the parameters it received.
    let sku = crate::domain::types::SkuId::parse("tee").unwrap();
    let push = a.push(
        &creds(),
        "http://p.test",
        &StockUpdate {
            sku: &sku,
            quantity: 7,
            idempotent_id: "tee:12",
            now_s: NOW,
        },
    );
    assert!(push.url.starts_with("http://p.test/sku/syncStock?"));
    let body: serde_json::Value = serde_json::from_str(&push.body).unwrap();
    assert_eq!(body["stock_num"], 7);
    assert_eq!(body["incremental"], false);
    assert_eq!(body["idempotent_id"], "tee:12");
    let q = form_pairs(push.url.split_once('?').unwrap().1);
    let get = |k: &str| q.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let expected = douyin::api_sign(
        b"s3cret",
        &[
            ("app_key", get("app_key")),
            ("method", get("method")),
            ("param_json", push.body.clone()),
            ("timestamp", get("timestamp")),
            ("v", get("v")),
        ],
    );
    assert_eq!(get("sign"), expected);
    assert!(a.pushed(200, r#"{"code":10000,"msg":"success"}"#).is_ok());
    assert!(a.pushed(200, r#"{"code":50002,"msg":"busy"}"#).is_err());
}

#[test]
fn taobao_signs_sorted_parameters() {
    let content = r#"{"tid":9001,"buyer_nick":"tb_u","orders":[{"outer_sku_id":"tee","num":1}]}"#;
    let mut params: Vec<(String, String)> = vec![
        ("topic".into(), "taobao_trade_TradeBuyerPay".into()),
        ("id".into(), "tmc-1".into()),
        ("content".into(), content.into()),
        ("app_key".into(), "app-1".into()),
        ("timestamp".into(), "2026-11-24 10:00:00".into()),
        ("sign_method".into(), "hmac-sha256".into()),
    ];
    params.push(("sign".into(), taobao::top_sign(b"s3cret", &params)));
    let pairs: Vec<(&str, String)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let body = form_encode(&pairs);
    let a = Platform::Taobao.adapter();
    a.verify(&creds(), &inbound(&[], "", body.as_bytes()))
        .unwrap();
    let forged = body.replace("tmc-1", "tmc-2");
    assert!(a
        .verify(&creds(), &inbound(&[], "", forged.as_bytes()))
        .is_err());
    let msgs = a.parse(&inbound(&[], "", body.as_bytes())).unwrap();
    assert_eq!(order_of(&msgs[0]), ("9001", PlatformStatus::Paid, 1));
    let sku = crate::domain::types::SkuId::parse("tee").unwrap();
    let push = a.push(
        &creds(),
        "http://p.test/router/rest",
        &StockUpdate {
            sku: &sku,
            quantity: 3,
            idempotent_id: "tee:4",
            now_s: NOW,
        },
    );
    let sent = form_pairs(&push.body);
    let sign = sent.iter().find(|(k, _)| k == "sign").unwrap().1.clone();
    assert_eq!(sign, taobao::top_sign(b"s3cret", &sent));
    assert!(sent.contains(&("quantity".into(), "3".into())));
    assert!(sent.contains(&("type".into(), "1".into())));
    assert!(a
        .pushed(200, r#"{"item_quantity_update_response":{}}"#)
        .is_ok());
    assert!(a.pushed(200, r#"{"error_response":{"code":7}}"#).is_err());
}

#[test]
fn kuaishou_and_wechat_check_their_schemes() {
    let body = br#"{"msgId":"k1","event":"kwaishop_order_orderClose","info":"{\"oid\":77,\"itemList\":[{\"skuNick\":\"tee\",\"num\":1}]}","createTime":1}"#;
    let t = NOW.to_string();
    let good = h(&[
        ("sign", &kuaishou::sign(b"s3cret", &t, body)),
        ("timestamp", &t),
    ]);
    let a = Platform::Kuaishou.adapter();
    a.verify(&creds(), &inbound(&good, "", body)).unwrap();
    let old = (NOW - 1000).to_string();
    let stale = h(&[
        ("sign", &kuaishou::sign(b"s3cret", &old, body)),
        ("timestamp", &old),
    ]);
    assert!(a.verify(&creds(), &inbound(&stale, "", body)).is_err());
    let msgs = a.parse(&inbound(&good, "", body)).unwrap();
    assert_eq!(order_of(&msgs[0]), ("77", PlatformStatus::Cancelled, 1));

    let body = br#"{"ToUserName":"gh_1","FromUserName":"oX","CreateTime":1790000000,"MsgType":"event","Event":"channels_ec_order_new","order_info":{"order_id":3705115058471208928,"product_infos":[{"sku_code":"tee","sku_cnt":2}]}}"#;
    let sig = wechat::signature("s3cret", &t, "n0nce");
    let query = format!("signature={sig}&timestamp={t}&nonce=n0nce");
    let w = Platform::Wechat.adapter();
    w.verify(&creds(), &inbound(&[], &query, body)).unwrap();
    let wrong = format!("signature={sig}&timestamp={t}&nonce=other");
    assert!(w.verify(&creds(), &inbound(&[], &wrong, body)).is_err());
    let msgs = w.parse(&inbound(&[], &query, body)).unwrap();
    assert_eq!(
        order_of(&msgs[0]),
        ("3705115058471208928", PlatformStatus::Created, 1)
    );
    assert_eq!(w.answer(&[]).body, "success");
}
