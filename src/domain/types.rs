//! Newtypes for every value that crosses the edge. Each has one way in,
//! `parse`, so a value of the type is always valid: the rest of the code never
//! re-checks a SKU id's characters or a quantity's range.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a raw value was refused, in words fit for a problem's `detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Checks the id grammar shared by SKU ids and buyer ids:
/// 1 to `max` characters of `[A-Za-z0-9._-]`.
fn check_id(what: &str, raw: &str, max: usize) -> Result<(), Invalid> {
    if raw.is_empty() || raw.len() > max || !raw.chars().all(is_id_char) {
        return Err(Invalid(format!(
            "{what} must be 1 to {max} characters of A-Z, a-z, 0-9, '.', '_' or '-'"
        )));
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(raw: String) -> Result<Self, Invalid> {
                Self::parse(&raw)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// A stock-keeping unit's id: 1–64 of `[A-Za-z0-9._-]`. Checked at the
    /// edge, before any Durable Object is addressed by it.
    SkuId
);
string_newtype!(
    /// A buyer's id as the storefront or platform knows it: 1–128 of
    /// `[A-Za-z0-9._-]`.
    BuyerId
);
string_newtype!(
    /// A hold's id: `h_` and 32 lowercase hex digits (128 random bits), made
    /// by the shell so the core stays deterministic.
    ReservationId
);
string_newtype!(
    /// An order's id: `o_` and 32 lowercase hex digits. Derived from the
    /// buyer and Idempotency-Key when the client gives one, so a retried
    /// create reaches the same order object.
    OrderId
);
string_newtype!(
    /// A move of units between the objects of one split SKU (its parent and
    /// its stock buckets): `t_` and 32 lowercase hex digits, drawn by the
    /// sender's shell. The receiver applies each id once.
    TransferId
);
string_newtype!(
    /// A live room's id (直播间): the grammar of SKU ids.
    RoomId
);
string_newtype!(
    /// Where an order came from: `own`, `douyin`, `kuaishou`, `taobao`, …:
    /// 1–32 of `[a-z0-9_-]`.
    Channel
);
string_newtype!(
    /// A client's `Idempotency-Key`: 1–200 visible ASCII characters.
    IdempotencyKey
);
string_newtype!(
    /// Free text on an adjustment or restock (a reason's detail, a purchase
    /// order number): up to 200 characters, no control characters.
    Note
);

impl SkuId {
    pub const LENGTH_MAX: usize = 64;
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        check_id("a SKU id", raw, Self::LENGTH_MAX)?;
        Ok(Self(raw.to_owned()))
    }
}

impl RoomId {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        check_id("a room id", raw, SkuId::LENGTH_MAX)?;
        Ok(Self(raw.to_owned()))
    }
}

impl Channel {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let ok = !raw.is_empty()
            && raw.len() <= 32
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return Err(Invalid(
                "channel is 1 to 32 of a-z, 0-9, '_' or '-' (own, douyin, kuaishou, taobao, …)"
                    .into(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

impl BuyerId {
    pub const LENGTH_MAX: usize = 128;
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        check_id("buyer", raw, Self::LENGTH_MAX)?;
        Ok(Self(raw.to_owned()))
    }
}

impl ReservationId {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if !is_hex_id(raw, "h_") {
            return Err(Invalid(
                "a reservation id is 'h_' followed by 32 lowercase hex digits".into(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// Builds an id from 16 bytes supplied by the caller: random, or for an
    /// order's line a digest of the order id and line number.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(hex_id("h_", bytes))
    }
}

/// Bytes as lowercase hex digits.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex digits (either case) as bytes; None if any pair is not hex.
pub fn unhex(raw: &str) -> Option<Vec<u8>> {
    if !raw.len().is_multiple_of(2) {
        return None;
    }
    raw.as_bytes()
        .chunks_exact(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

/// `prefix` and 32 lowercase hex digits: the shape of hold and order ids.
fn is_hex_id(raw: &str, prefix: &str) -> bool {
    raw.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn hex_id(prefix: &str, bytes: [u8; 16]) -> String {
    format!("{prefix}{}", hex(&bytes))
}

impl TransferId {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if !is_hex_id(raw, "t_") {
            return Err(Invalid(
                "a transfer id is 't_' followed by 32 lowercase hex digits".into(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(hex_id("t_", bytes))
    }
}

impl OrderId {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if !is_hex_id(raw, "o_") {
            return Err(Invalid(
                "an order id is 'o_' followed by 32 lowercase hex digits".into(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// Builds an id from 16 bytes: random, or a digest of buyer and key.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(hex_id("o_", bytes))
    }
}

impl IdempotencyKey {
    pub const LENGTH_MAX: usize = 200;
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty()
            || raw.len() > Self::LENGTH_MAX
            || !raw.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Invalid(format!(
                "Idempotency-Key must be 1 to {} visible ASCII characters",
                Self::LENGTH_MAX
            )));
        }
        Ok(Self(raw.to_owned()))
    }
}

/// Where a stored idempotency answer lives: the caller's scope, then its
/// key. Scopes keep callers' keys apart: one buyer's `cart-1` never meets
/// another's, and an order's own saga keys (scope `order:<id>`, an actor
/// only order objects are) cannot be reached by any client, whatever key it
/// sends. The space cannot occur in a scope or a key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplayKey(String);

impl ReplayKey {
    pub fn new(scope: &str, key: &IdempotencyKey) -> ReplayKey {
        ReplayKey(format!("{scope} {key}"))
    }

    /// A key as stored (for the store's own round trip).
    pub fn from_stored(raw: String) -> ReplayKey {
        ReplayKey(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Note {
    pub const LENGTH_MAX: usize = 200;
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.chars().count() > Self::LENGTH_MAX || raw.chars().any(char::is_control) {
            return Err(Invalid(format!(
                "text fields are at most {} characters with no control characters",
                Self::LENGTH_MAX
            )));
        }
        Ok(Self(raw.to_owned()))
    }
}

/// A count of units moved by one request: 1 to [`Quantity::MAX`]. Zero is not
/// a quantity; a request that would move nothing is refused at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Quantity(u64);

impl Quantity {
    /// A billion units in one request is already absurd; the cap keeps every
    /// sum far from overflow.
    pub const MAX: u64 = 1_000_000_000;

    pub fn parse(raw: u64) -> Result<Self, Invalid> {
        if raw == 0 || raw > Self::MAX {
            return Err(Invalid(format!(
                "a quantity is a whole number from 1 to {}",
                Self::MAX
            )));
        }
        Ok(Self(raw))
    }
}

/// A stock level (on hand, a threshold): 0 to [`Units::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Units(u64);

impl Units {
    /// 10^12 units: more than any warehouse, and small enough that on_hand,
    /// reserved and sold all fit in a JavaScript number exactly.
    pub const MAX: u64 = 1_000_000_000_000;

    pub fn parse(raw: u64) -> Result<Self, Invalid> {
        if raw > Self::MAX {
            return Err(Invalid(format!(
                "a stock level is a whole number from 0 to {}",
                Self::MAX
            )));
        }
        Ok(Self(raw))
    }
}

/// A signed correction to on_hand: nonzero, |delta| ≤ [`Quantity::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Delta(i64);

impl Delta {
    pub fn parse(raw: i64) -> Result<Self, Invalid> {
        if raw == 0 || raw.unsigned_abs() > Quantity::MAX {
            return Err(Invalid(format!(
                "delta is a nonzero whole number from -{0} to {0}",
                Quantity::MAX
            )));
        }
        Ok(Self(raw))
    }
}

/// How long a hold lives before the alarm returns its units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct HoldSeconds(u64);

impl HoldSeconds {
    pub const DEFAULT: HoldSeconds = HoldSeconds(300);
    /// One second is too short for a person but lets tests watch an expiry.
    pub const MIN: u64 = 1;
    /// A day: a hold longer than that is a sale nobody finished.
    pub const MAX: u64 = 86_400;

    pub fn parse(raw: u64) -> Result<Self, Invalid> {
        if !(Self::MIN..=Self::MAX).contains(&raw) {
            return Err(Invalid(format!(
                "hold_seconds is a whole number from {} to {}",
                Self::MIN,
                Self::MAX
            )));
        }
        Ok(Self(raw))
    }

    pub fn as_ms(self) -> u64 {
        self.0 * 1000
    }
}

/// The conversions every numeric newtype shares: serde goes through `parse`
/// (`try_from`), and `get` reads the value out.
macro_rules! numeric_newtype {
    ($name:ident, $raw:ty) => {
        impl $name {
            pub fn get(self) -> $raw {
                self.0
            }
        }

        impl TryFrom<$raw> for $name {
            type Error = Invalid;
            fn try_from(raw: $raw) -> Result<Self, Invalid> {
                Self::parse(raw)
            }
        }

        impl From<$name> for $raw {
            fn from(value: $name) -> $raw {
                value.0
            }
        }
    };
}

numeric_newtype!(Quantity, u64);
numeric_newtype!(Units, u64);
numeric_newtype!(Delta, i64);
numeric_newtype!(HoldSeconds, u64);

/// Why on_hand was corrected. A closed set, so reports can group by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustReason {
    Damaged,
    Lost,
    Found,
    Recount,
    Returned,
    Correction,
}

impl AdjustReason {
    pub const ALL: &'static str = "damaged, lost, found, recount, returned, correction";
}

/// The first 16 bytes of SHA-256 over `parts` (each ended by a zero byte):
/// the one way ids are derived from other ids (an order's hold per line, a
/// keyed create's order, a stand-in for an unreported hold, shard names).
pub fn digest16(parts: &[&str]) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    let full = hasher.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_ids_accept_the_grammar_and_nothing_else() {
        let cases: &[(&str, bool)] = &[
            ("A", true),
            ("sku-1.red_XL", true),
            (&"x".repeat(64), true),
            ("", false),
            (&"x".repeat(65), false),
            ("a/b", false),
            ("a b", false),
            ("ünï", false),
            ("a%2Fb", false),
        ];
        for (raw, ok) in cases {
            assert_eq!(SkuId::parse(raw).is_ok(), *ok, "{raw:?}");
        }
    }

    #[test]
    fn numbers_have_ranges() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(1).is_ok());
        assert!(Quantity::parse(Quantity::MAX + 1).is_err());
        assert!(Units::parse(0).is_ok());
        assert!(Units::parse(Units::MAX + 1).is_err());
        assert!(Delta::parse(0).is_err());
        assert!(Delta::parse(-5).is_ok());
        assert!(Delta::parse(i64::MIN).is_err());
        assert!(HoldSeconds::parse(0).is_err());
        assert!(HoldSeconds::parse(86_401).is_err());
    }

    #[test]
    fn reservation_ids_round_trip() {
        let id = ReservationId::from_random([0xab; 16]);
        assert_eq!(ReservationId::parse(id.as_str()), Ok(id));
        assert!(ReservationId::parse("h_XYZ").is_err());
        assert!(ReservationId::parse("h_ABABABABABABABABABABABABABABABAB").is_err());
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(IdempotencyKey::parse("order-42/attempt").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(201)).is_err());
    }
}
