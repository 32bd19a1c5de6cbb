//! Who is calling, proven by a signature: buyer session tokens (JWT, HS256)
//! and payment provider callbacks (`Edgestock-Signature`). Pure functions of
//! the bytes, the secrets and the time, so the shell only passes them in.
//!
//! Both verifiers take a list of secrets so a secret can be rotated without a
//! gap: deploy the new one beside the old, then drop the old. Empty secrets
//! are skipped, so an unset variable never becomes a key anyone can sign with.

use crate::domain::types::BuyerId;
use base64ct::{Base64UrlUnpadded, Encoding};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Clock difference tolerated between the token issuer and the Worker.
pub const SKEW_S: u64 = 60;
/// The longest session one token may grant, so a leaked token dies in a week.
pub const MAX_LIFETIME_S: u64 = 7 * 24 * 3600;
/// Real tokens are a few hundred bytes; the cap bounds the decoding and
/// hashing an anonymous caller can make us do.
pub const MAX_TOKEN_LEN: usize = 4096;
/// The longest `device` or `channel` claim, in characters.
pub const MAX_CLAIM_CHARS: usize = 128;
/// How far a callback's `t` may be from now: a captured callback cannot be
/// replayed later than this.
pub const PAYMENT_TOLERANCE_S: u64 = 300;
/// A real header is under 200 bytes, even with two `v1` during a rotation.
pub const MAX_PAYMENT_HEADER_LEN: usize = 1024;

const JWT_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
const THREE_PARTS: &str = "it is not three dot-separated parts";

/// What a valid session token says about its bearer. Claims other than
/// these are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: BuyerId,
    /// Expiry and issue time, in Unix seconds.
    pub exp: u64,
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// When the buyer's account was made, in Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_created: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// Why a session token was refused. `detail` never repeats the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// Too long, not three base64url parts, or a header that is not JSON.
    Malformed(&'static str),
    /// Anything but HS256, including `none` and a missing `alg`.
    BadAlgorithm,
    BadSignature,
    Expired,
    /// Issued in the future, beyond the allowed skew.
    NotYetValid,
    /// `exp - iat` exceeds `MAX_LIFETIME_S`.
    TooLong,
    /// Signed by us, but a claim is missing or out of its grammar.
    BadClaims(String),
    /// No session secret is set, so no token can be valid.
    Disabled,
}

impl SessionError {
    pub fn detail(&self) -> String {
        match self {
            SessionError::Malformed(why) => format!("The session token is malformed: {why}."),
            SessionError::BadAlgorithm => "The session token must be signed with HS256.".into(),
            SessionError::BadSignature => "The session token's signature does not match.".into(),
            SessionError::Expired => "The session token has expired.".into(),
            SessionError::NotYetValid => "The session token is issued in the future.".into(),
            SessionError::TooLong => format!(
                "The session token is valid for more than {} days.",
                MAX_LIFETIME_S / 86_400
            ),
            SessionError::BadClaims(why) => {
                format!("The session token's claims are invalid: {why}.")
            }
            SessionError::Disabled => "Buyer sessions are not configured.".into(),
        }
    }
}

/// Checks a buyer's session token and returns its claims. The signature is
/// checked before the claims are parsed, so nothing unsigned is believed.
pub fn verify_session(token: &str, secrets: &[&[u8]], now_s: u64) -> Result<Claims, SessionError> {
    use SessionError::{BadClaims, BadSignature, Malformed};
    if !has_secret(secrets) {
        return Err(SessionError::Disabled);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(Malformed("it is longer than 4096 bytes"));
    }
    let (signed, signature) = token.rsplit_once('.').ok_or(Malformed(THREE_PARTS))?;
    let (header, payload) = signed.split_once('.').ok_or(Malformed(THREE_PARTS))?;
    if payload.contains('.') {
        return Err(Malformed(THREE_PARTS));
    }
    check_header(&decode(header, "the header is not base64url")?)?;
    let signature = decode(signature, "the signature is not base64url")?;
    if !signed_by_any(secrets, &[signed.as_bytes()], &[signature]) {
        return Err(BadSignature);
    }
    let payload = decode(payload, "the payload is not base64url")?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|e| {
        if e.is_data() {
            BadClaims(e.to_string())
        } else {
            Malformed("the payload is not JSON")
        }
    })?;
    check_claims(&claims, now_s)?;
    Ok(claims)
}

/// Makes a token `verify_session` accepts under `secret` (a token signed
/// with an empty secret is never accepted).
pub fn sign_session(claims: &Claims, secret: &[u8]) -> String {
    let payload = serde_json::to_string(claims).expect("claims are strings and integers");
    let signed = format!(
        "{}.{}",
        Base64UrlUnpadded::encode_string(JWT_HEADER.as_bytes()),
        Base64UrlUnpadded::encode_string(payload.as_bytes())
    );
    let tag = keyed(secret, &[signed.as_bytes()]).finalize().into_bytes();
    format!("{signed}.{}", Base64UrlUnpadded::encode_string(&tag))
}

/// Only HS256: trusting the header's choice of algorithm is how `none` and
/// key-confusion attacks get in.
fn check_header(raw: &[u8]) -> Result<(), SessionError> {
    let Ok(Value::Object(header)) = serde_json::from_slice(raw) else {
        return Err(SessionError::Malformed("the header is not a JSON object"));
    };
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(SessionError::BadAlgorithm);
    }
    if header
        .get("typ")
        .is_some_and(|typ| typ.as_str() != Some("JWT"))
    {
        return Err(SessionError::Malformed("typ is not JWT"));
    }
    // RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
    if header.contains_key("crit") {
        return Err(SessionError::Malformed(
            "the header lists critical extensions",
        ));
    }
    Ok(())
}

fn check_claims(claims: &Claims, now_s: u64) -> Result<(), SessionError> {
    for (name, value) in [("device", &claims.device), ("channel", &claims.channel)] {
        if value
            .as_ref()
            .is_some_and(|v| v.chars().count() > MAX_CLAIM_CHARS)
        {
            return Err(SessionError::BadClaims(format!(
                "{name} is longer than {MAX_CLAIM_CHARS} characters"
            )));
        }
    }
    let lifetime = claims
        .exp
        .checked_sub(claims.iat)
        .ok_or_else(|| SessionError::BadClaims("exp is before iat".into()))?;
    if lifetime > MAX_LIFETIME_S {
        return Err(SessionError::TooLong);
    }
    if now_s > claims.exp.saturating_add(SKEW_S) {
        return Err(SessionError::Expired);
    }
    if claims.iat > now_s.saturating_add(SKEW_S) {
        return Err(SessionError::NotYetValid);
    }
    Ok(())
}

fn decode(part: &str, why: &'static str) -> Result<Vec<u8>, SessionError> {
    Base64UrlUnpadded::decode_vec(part).map_err(|_| SessionError::Malformed(why))
}

/// Why a payment callback was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// No `Edgestock-Signature` header (the shell passes an absent one as "").
    Missing,
    Malformed(&'static str),
    /// Signed, but `t` is more than `PAYMENT_TOLERANCE_S` from now: a replay,
    /// or a clock far off.
    Stale,
    Mismatch,
    /// No payment secret is set, so no callback can be valid.
    Disabled,
}

impl SignatureError {
    pub fn detail(&self) -> String {
        match self {
            SignatureError::Missing => "The Edgestock-Signature header is missing.".into(),
            SignatureError::Malformed(why) => {
                format!("The Edgestock-Signature header is malformed: {why}.")
            }
            SignatureError::Stale => format!(
                "The callback's timestamp is more than {PAYMENT_TOLERANCE_S} seconds from now."
            ),
            SignatureError::Mismatch => "The callback's signature does not match its body.".into(),
            SignatureError::Disabled => "Payment callbacks are not configured.".into(),
        }
    }
}

/// Checks a payment provider's `Edgestock-Signature: t=…,v1=…` over the raw
/// body and returns `t`. Any `v1` may match, so the provider can send one per
/// secret while rotating; unknown keys are ignored so it can add schemes.
pub fn verify_payment(
    header: &str,
    body: &[u8],
    secrets: &[&[u8]],
    now_s: u64,
) -> Result<u64, SignatureError> {
    use SignatureError::Malformed;
    if !has_secret(secrets) {
        return Err(SignatureError::Disabled);
    }
    if header.len() > MAX_PAYMENT_HEADER_LEN {
        return Err(Malformed("it is longer than 1024 bytes"));
    }
    if header.trim().is_empty() {
        return Err(SignatureError::Missing);
    }
    let mut stamp = None;
    let mut tags = Vec::new();
    for item in header.split(',') {
        let (key, value) = item
            .trim()
            .split_once('=')
            .ok_or(Malformed("an item is not key=value"))?;
        match key {
            "t" if stamp.is_some() => return Err(Malformed("t appears more than once")),
            "t" => {
                stamp = Some((
                    value,
                    parse_stamp(value).ok_or(Malformed("t is not 1 to 12 digits"))?,
                ))
            }
            "v1" => tags.push(decode_hex32(value).ok_or(Malformed("v1 is not 64 hex digits"))?),
            _ => {}
        }
    }
    let (raw_t, t) = stamp.ok_or(Malformed("t is missing"))?;
    if tags.is_empty() {
        return Err(Malformed("v1 is missing"));
    }
    if !signed_by_any(secrets, &[raw_t.as_bytes(), b".", body], &tags) {
        return Err(SignatureError::Mismatch);
    }
    if now_s.abs_diff(t) > PAYMENT_TOLERANCE_S {
        return Err(SignatureError::Stale);
    }
    Ok(t)
}

/// The whole `Edgestock-Signature` value over `body` at `t`: what a payment
/// provider sends us, and what our webhooks send a merchant.
pub fn sign_body(t: u64, body: &[u8], secret: &[u8]) -> String {
    let tag = keyed(secret, &[t.to_string().as_bytes(), b".", body])
        .finalize()
        .into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

fn parse_stamp(raw: &str) -> Option<u64> {
    let digits = (1..=12).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| raw.parse().ok()).flatten()
}

/// Decodes exactly 64 hex digits, either case. Not constant-time, which is
/// fine: the tag is the caller's own, and the comparison is constant-time.
fn decode_hex32(raw: &str) -> Option<[u8; 32]> {
    if raw.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(raw.as_bytes().chunks_exact(2)) {
        let &[hi, lo] = pair else { return None };
        let value = (char::from(hi).to_digit(16)? << 4) | char::from(lo).to_digit(16)?;
        *byte = u8::try_from(value).ok()?;
    }
    Some(out)
}

fn has_secret(secrets: &[&[u8]]) -> bool {
    secrets.iter().any(|secret| !secret.is_empty())
}

/// An HMAC-SHA256 of the concatenated `message` parts under `secret`.
fn keyed(secret: &[u8], message: &[&[u8]]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    for part in message {
        mac.update(part);
    }
    mac
}

/// Whether any tag is the HMAC of `message` under any non-empty secret.
/// `verify_slice` compares in constant time, so a forger learns nothing from
/// how long a wrong tag took to refuse.
fn signed_by_any<T: AsRef<[u8]>>(secrets: &[&[u8]], message: &[&[u8]], tags: &[T]) -> bool {
    secrets.iter().filter(|s| !s.is_empty()).any(|secret| {
        let mac = keyed(secret, message);
        tags.iter()
            .any(|tag| mac.clone().verify_slice(tag.as_ref()).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"edgestock-test-secret";
    const NOW: u64 = 1_700_000_000;

    fn claims(iat: u64, exp: u64) -> Claims {
        Claims {
            sub: BuyerId::parse("buyer-42").unwrap(),
            exp,
            iat,
            device: None,
            account_created: None,
            channel: None,
        }
    }

    fn b64(raw: &str) -> String {
        Base64UrlUnpadded::encode_string(raw.as_bytes())
    }

    /// Appends a correct signature to any `header.payload` text.
    fn seal(signed: &str, secret: &[u8]) -> String {
        let tag = keyed(secret, &[signed.as_bytes()]).finalize().into_bytes();
        format!("{signed}.{}", Base64UrlUnpadded::encode_string(&tag))
    }

    /// A token over any header and payload JSON, correctly signed.
    fn forge(header: &str, payload: &str, secret: &[u8]) -> String {
        seal(&format!("{}.{}", b64(header), b64(payload)), secret)
    }

    fn verify(token: &str) -> Result<Claims, SessionError> {
        verify_session(token, &[SECRET], NOW)
    }

    fn payload_verdict(payload: &str) -> Result<Claims, SessionError> {
        verify(&forge(JWT_HEADER, payload, SECRET))
    }

    #[test]
    fn session_round_trip() {
        let mut c = claims(NOW, NOW + 3600);
        c.device = Some("直播-ios".into());
        c.channel = Some("douyin".into());
        c.account_created = Some(1);
        assert_eq!(verify(&sign_session(&c, SECRET)), Ok(c));
    }

    #[test]
    fn session_known_answer() {
        // Made with Python's hmac, hashlib and base64, not with this module.
        const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
            eyJzdWIiOiJidXllci00MiIsImV4cCI6MTcwMDAwMzYwMCwiaWF0IjoxNzAwMDAwMDAwLCJkZXZpY2UiOiJpb3MtMTciLCJhY2NvdW50X2NyZWF0ZWQiOjE2OTAwMDAwMDAsImNoYW5uZWwiOiJkb3V5aW4ifQ.\
            kDQny4xJUsDhbPUWymyafVQnlcn1qtYSnSDb4FNpv0Q";
        let c = Claims {
            device: Some("ios-17".into()),
            account_created: Some(1_690_000_000),
            channel: Some("douyin".into()),
            ..claims(NOW, NOW + 3600)
        };
        assert_eq!(sign_session(&c, SECRET), TOKEN);
        assert_eq!(verify(TOKEN), Ok(c));
    }

    #[test]
    fn jwt_io_example_passes_the_signature_then_lacks_exp() {
        const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
            eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
            SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        match verify_session(TOKEN, &[b"your-256-bit-secret"], NOW) {
            Err(SessionError::BadClaims(why)) => assert!(why.contains("exp"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(verify(TOKEN), Err(SessionError::BadSignature));
    }

    #[test]
    fn tampered_payload_is_refused() {
        let token = sign_session(&claims(NOW, NOW + 3600), SECRET);
        let (header, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let other = b64(r#"{"sub":"buyer-43","exp":1700003600,"iat":1700000000}"#);
        let forged = format!("{header}.{other}.{signature}");
        assert_eq!(verify(&forged), Err(SessionError::BadSignature));
    }

    #[test]
    fn wrong_secret_is_refused_and_rotation_accepted() {
        let token = sign_session(&claims(NOW, NOW + 3600), b"old-secret");
        assert_eq!(verify(&token), Err(SessionError::BadSignature));
        assert!(verify_session(&token, &[SECRET, b"old-secret"], NOW).is_ok());
        assert!(verify_session(&token, &[b"", b"old-secret"], NOW).is_ok());
    }

    #[test]
    fn no_secret_disables_sessions() {
        let token = sign_session(&claims(NOW, NOW + 3600), b"");
        assert_eq!(
            verify_session(&token, &[], NOW),
            Err(SessionError::Disabled)
        );
        assert_eq!(
            verify_session(&token, &[b""], NOW),
            Err(SessionError::Disabled)
        );
    }

    #[test]
    fn only_hs256_is_accepted() {
        let payload = r#"{"sub":"buyer-42","exp":1700003600,"iat":1700000000}"#;
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"RS256","typ":"JWT"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"typ":"JWT"}"#,
            r#"{"alg":null}"#,
        ] {
            assert_eq!(
                verify(&forge(header, payload, SECRET)),
                Err(SessionError::BadAlgorithm),
                "{header}"
            );
        }
        let unsigned = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(payload));
        assert_eq!(verify(&unsigned), Err(SessionError::BadAlgorithm));
        assert!(verify(&forge(r#"{"alg":"HS256"}"#, payload, SECRET)).is_ok());
        for header in [
            r#"{"alg":"HS256","typ":"JOSE"}"#,
            r#"{"alg":"HS256","crit":["b64"]}"#,
        ] {
            assert!(matches!(
                verify(&forge(header, payload, SECRET)),
                Err(SessionError::Malformed(_))
            ));
        }
    }

    #[test]
    fn expiry_allows_the_skew_and_no_more() {
        let token = sign_session(&claims(NOW - 3600, NOW), SECRET);
        assert!(verify_session(&token, &[SECRET], NOW + SKEW_S).is_ok());
        assert_eq!(
            verify_session(&token, &[SECRET], NOW + SKEW_S + 1),
            Err(SessionError::Expired)
        );
    }

    #[test]
    fn issue_time_in_the_future_is_refused() {
        let early = claims(NOW + SKEW_S + 1, NOW + SKEW_S + 3600);
        assert_eq!(
            verify(&sign_session(&early, SECRET)),
            Err(SessionError::NotYetValid)
        );
        let skewed = claims(NOW + SKEW_S, NOW + SKEW_S + 3600);
        assert!(verify(&sign_session(&skewed, SECRET)).is_ok());
    }

    #[test]
    fn lifetime_is_capped() {
        let longest = claims(NOW, NOW + MAX_LIFETIME_S);
        assert!(verify(&sign_session(&longest, SECRET)).is_ok());
        let too_long = claims(NOW, NOW + MAX_LIFETIME_S + 1);
        assert_eq!(
            verify(&sign_session(&too_long, SECRET)),
            Err(SessionError::TooLong)
        );
        let backwards = claims(NOW, NOW - 1);
        assert!(matches!(
            verify(&sign_session(&backwards, SECRET)),
            Err(SessionError::BadClaims(_))
        ));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let token = sign_session(&claims(NOW, NOW + 3600), SECRET);
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let (header, _) = signed.split_once('.').unwrap();
        let huge = Claims {
            device: Some("d".repeat(4000)),
            ..claims(NOW, NOW + 3600)
        };
        for bad in [
            String::new(),
            signed.to_owned(),
            format!("{token}.{signature}"),
            format!("{signed}.!!{signature}"),
            format!("{header}=.{}", &token[header.len() + 1..]),
            forge("not json", "{}", SECRET),
            forge(JWT_HEADER, "not json", SECRET),
            seal(&format!("{header}.%%%"), SECRET),
            sign_session(&huge, SECRET),
        ] {
            assert!(
                matches!(verify(&bad), Err(SessionError::Malformed(_))),
                "{bad:.80}: {:?}",
                verify(&bad)
            );
        }
    }

    #[test]
    fn claims_are_checked_after_the_signature() {
        for payload in [
            r#"{"exp":1700003600,"iat":1700000000}"#,
            r#"{"sub":"buyer 42","exp":1700003600,"iat":1700000000}"#,
            r#"{"sub":"","exp":1700003600,"iat":1700000000}"#,
            r#"{"sub":"buyer-42","iat":1700000000}"#,
            r#"{"sub":"buyer-42","exp":1700003600}"#,
            r#"{"sub":"buyer-42","exp":1700003600.5,"iat":1700000000}"#,
            r#"{"sub":"buyer-42","exp":"1700003600","iat":1700000000}"#,
            r#"{"sub":"buyer-42","exp":1700003600,"iat":-1}"#,
            r#"[]"#,
        ] {
            let verdict = payload_verdict(payload);
            assert!(
                matches!(verdict, Err(SessionError::BadClaims(_))),
                "{payload}"
            );
        }
        let long = format!(
            r#"{{"sub":"buyer-42","exp":1700003600,"iat":1700000000,"channel":"{}"}}"#,
            "c".repeat(MAX_CLAIM_CHARS + 1)
        );
        assert!(matches!(
            payload_verdict(&long),
            Err(SessionError::BadClaims(_))
        ));
        let wide = Claims {
            device: Some("直".repeat(MAX_CLAIM_CHARS)),
            ..claims(NOW, NOW + 3600)
        };
        assert!(verify(&sign_session(&wide, SECRET)).is_ok());
    }

    #[test]
    fn unknown_claims_are_ignored() {
        let verdict =
            payload_verdict(r#"{"sub":"buyer-42","exp":1700003600,"iat":1700000000,"role":"x"}"#);
        assert_eq!(verdict, Ok(claims(NOW, NOW + 3600)));
    }

    #[test]
    fn details_never_repeat_the_token() {
        let token = forge(JWT_HEADER, r#"{"sub":"buyer 42","exp":1,"iat":1}"#, SECRET);
        let err = verify(&token).unwrap_err();
        assert!(matches!(err, SessionError::BadClaims(_)));
        let detail = err.detail();
        assert!(
            !detail.contains(&token) && !detail.contains("buyer 42"),
            "{detail}"
        );
    }

    const PAY_SECRET: &[u8] = b"whsec_test";
    const BODY: &[u8] = br#"{"order":"o_1","status":"paid"}"#;

    fn pay(header: &str) -> Result<u64, SignatureError> {
        verify_payment(header, BODY, &[PAY_SECRET], NOW)
    }

    /// The hex tag of a header made by `sign_body`.
    fn tag(header: &str) -> &str {
        header.split_once(",v1=").unwrap().1
    }

    #[test]
    fn payment_known_answer() {
        // Made with Python's hmac and hashlib, not with this module.
        const HEADER: &str =
            "t=1700000000,v1=30ae9b272b9a998f031a8bf423d79b95bb9150646608652ec3a495f953126443";
        assert_eq!(sign_body(NOW, BODY, PAY_SECRET), HEADER);
        assert_eq!(pay(HEADER), Ok(NOW));
        assert_eq!(
            pay(&HEADER
                .to_uppercase()
                .replace("T=", "t=")
                .replace("V1=", "v1=")),
            Ok(NOW)
        );
    }

    #[test]
    fn payment_tolerance_is_five_minutes_either_way() {
        for t in [NOW - PAYMENT_TOLERANCE_S, NOW + PAYMENT_TOLERANCE_S] {
            assert_eq!(pay(&sign_body(t, BODY, PAY_SECRET)), Ok(t));
        }
        for t in [NOW - PAYMENT_TOLERANCE_S - 1, NOW + PAYMENT_TOLERANCE_S + 1] {
            assert_eq!(
                pay(&sign_body(t, BODY, PAY_SECRET)),
                Err(SignatureError::Stale)
            );
        }
    }

    #[test]
    fn payment_body_and_secret_must_match() {
        let header = sign_body(NOW, BODY, PAY_SECRET);
        assert_eq!(
            verify_payment(
                &header,
                b"{\"order\":\"o_1\",\"status\":\"paid\"} ",
                &[PAY_SECRET],
                NOW
            ),
            Err(SignatureError::Mismatch)
        );
        let other = sign_body(NOW, BODY, b"whsec_other");
        assert_eq!(pay(&other), Err(SignatureError::Mismatch));
        assert_eq!(
            verify_payment(&other, BODY, &[PAY_SECRET, b"whsec_other"], NOW),
            Ok(NOW)
        );
        assert_eq!(
            verify_payment(&header, BODY, &[b""], NOW),
            Err(SignatureError::Disabled)
        );
        assert_eq!(
            verify_payment(&header, BODY, &[], NOW),
            Err(SignatureError::Disabled)
        );
    }

    #[test]
    fn payment_header_grammar() {
        let good = sign_body(NOW, BODY, PAY_SECRET);
        let v1 = tag(&good);
        assert_eq!(pay(""), Err(SignatureError::Missing));
        assert_eq!(pay("  "), Err(SignatureError::Missing));
        assert_eq!(pay(&format!(" t={NOW} , v1={v1} ")), Ok(NOW));
        assert_eq!(pay(&format!("v0=zz,t={NOW},scheme=x,v1={v1}")), Ok(NOW));
        for bad in [
            format!("v1={v1}"),
            format!("t={NOW},t={NOW},v1={v1}"),
            format!("t={NOW}"),
            format!("t=,v1={v1}"),
            format!("t=+{NOW},v1={v1}"),
            format!("t=17e8,v1={v1}"),
            format!("t=1{NOW}00,v1={v1}"),
            format!("t={NOW},v1={}", &v1[1..]),
            format!("t={NOW},v1={}g", &v1[1..]),
            format!("t={NOW},v1={v1},"),
            format!("t={NOW},v1={v1}{}", " ".repeat(MAX_PAYMENT_HEADER_LEN)),
        ] {
            assert!(
                matches!(pay(&bad), Err(SignatureError::Malformed(_))),
                "{bad:.100}"
            );
        }
    }

    #[test]
    fn any_v1_may_match() {
        let v1 = tag(&sign_body(NOW, BODY, PAY_SECRET)).to_owned();
        let stale = tag(&sign_body(NOW, BODY, b"whsec_old")).to_owned();
        assert_eq!(pay(&format!("t={NOW},v1={stale},v1={v1}")), Ok(NOW));
        assert_eq!(pay(&format!("t={NOW},v1={v1},v1={stale}")), Ok(NOW));
        assert_eq!(
            pay(&format!("t={NOW},v1={stale},v1={stale}")),
            Err(SignatureError::Mismatch)
        );
    }
}
