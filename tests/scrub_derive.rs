//! `#[derive(Scrub)]` on the shapes real request types have: nesting, generics, enums, tuples,
//! collections, and every per-field option; its `Debug` and its serialized form agree.

use std::collections::{BTreeMap, HashMap};

use obs_runtime::Scrub;
use obs_runtime::scrub::{Safe, Scrubbed};

#[derive(Scrub)]
struct Address {
    street: String,
    city: String,
}

#[derive(Scrub)]
struct Buyer {
    user_id: u64,
    email: String,
    #[scrub(keep)]
    password_hint_id: String,
    address: Option<Address>,
}

#[derive(Scrub)]
enum PaymentMethod {
    Online {
        card_number: String,
        #[scrub(partial = 4)]
        reference: String,
    },
    Offline(#[scrub(redact)] String),
    Free,
}

#[derive(Scrub)]
struct Checkout<T> {
    buyer: Buyer,
    method: PaymentMethod,
    items: Vec<T>,
    #[scrub(text)]
    remark: std::net::Ipv4Addr,
    #[scrub(skip)]
    #[allow(dead_code)]
    internal: Vec<u8>,
    headers: BTreeMap<String, String>,
}

#[derive(Scrub)]
struct Item(u32, String);

#[derive(Scrub)]
enum Credential {
    Password(String),
    ApiKey(String),
    Email(String),
    UserId(u64),
}

#[derive(Scrub)]
struct SessionToken(String);

#[derive(Scrub)]
#[scrub(no_debug)]
#[derive(Debug)]
struct OwnDebug {
    cvv: u16,
}

fn checkout() -> Checkout<Item> {
    Checkout {
        buyer: Buyer {
            user_id: 7,
            email: "ana@example.org".into(),
            password_hint_id: "kept-as-is".into(),
            address: Some(Address { street: "1 Main St, ana@example.org".into(), city: "Berlin".into() }),
        },
        method: PaymentMethod::Online { card_number: "4111111111111111".into(), reference: "ch_3PqRs1234".into() },
        items: vec![Item(1, "VIP 4111 1111 1111 1111".into())],
        remark: std::net::Ipv4Addr::new(10, 0, 0, 1),
        internal: vec![1, 2, 3],
        headers: BTreeMap::from([
            ("Authorization".into(), "Bearer abcdefghijklmnop".into()),
            ("accept".into(), "text/html".into()),
        ]),
    }
}

#[test]
fn debug_is_the_scrubbed_form() {
    assert_eq!(
        format!("{:?}", checkout()),
        "Checkout { buyer: Buyer { user_id: 7, email: \"[EMAIL]\", password_hint_id: \"kept-as-is\", address: \
         Address { street: \"1 Main St, [EMAIL]\", city: \"Berlin\" } }, method: Online { card_number: [REDACTED], \
         reference: \"****1234\" }, items: [Item(1, \"VIP [CARD]\")], remark: \"10.0.0.1\", headers: \
         {\"Authorization\": [REDACTED], \"accept\": \"text/html\"} }"
    );
    assert_eq!(format!("{:?}", PaymentMethod::Offline("IBAN DE89".into())), "Offline([REDACTED])");
    assert_eq!(format!("{:?}", PaymentMethod::Free), "Free");
    // Fields without names go by their variant's or type's name.
    assert_eq!(format!("{:?}", Credential::Password("hunter2".into())), "Password([REDACTED])");
    assert_eq!(format!("{:?}", Credential::ApiKey("k-123".into())), "ApiKey([REDACTED])");
    assert_eq!(format!("{:?}", Credential::Email("ana@example.org".into())), "Email(\"[EMAIL]\")");
    assert_eq!(format!("{:?}", Credential::UserId(4111111111111111)), "UserId(4111111111111111)");
    assert_eq!(format!("{:?}", SessionToken("abc".into())), "SessionToken([REDACTED])");
    assert_eq!(format!("{:?}", OwnDebug { cvv: 123 }), "OwnDebug { cvv: 123 }", "no_debug keeps the user's");
    assert_eq!(
        OwnDebug { cvv: 123 }.scrub(),
        Scrubbed::Struct { name: "OwnDebug", variant: false, fields: vec![("cvv", Scrubbed::Redacted)] }
    );
}

#[test]
fn serialization_is_the_scrubbed_form_and_valid_json() {
    let json: serde_json::Value = serde_json::to_value(Safe(&checkout())).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "buyer": {
                "user_id": 7,
                "email": "[EMAIL]",
                "password_hint_id": "kept-as-is",
                "address": {"street": "1 Main St, [EMAIL]", "city": "Berlin"}
            },
            "method": {"Online": {"card_number": "[REDACTED]", "reference": "****1234"}},
            "items": [[1, "VIP [CARD]"]],
            "remark": "10.0.0.1",
            "headers": {"Authorization": "[REDACTED]", "accept": "text/html"}
        })
    );
    assert_eq!(Safe(&PaymentMethod::Free).to_string(), "\"Free\"");
    assert_eq!(Safe(&PaymentMethod::Offline("x".into())).to_string(), r#"{"Offline":"[REDACTED]"}"#);
}

#[test]
fn maps_and_collections_scrub_by_key() {
    let form: HashMap<&str, Option<&str>> = HashMap::from([("new-password", Some("pw")), ("user_id", Some("42"))]);
    let s = Safe(&form).to_string();
    assert!(s.contains(r#""new-password":"[REDACTED]""#) && s.contains(r#""user_id":"42""#), "{s}");
    // A map keyed by personal data.
    let by_email = BTreeMap::from([("ana@example.org", 3u32)]);
    assert_eq!(Safe(&by_email).to_string(), r#"{"[EMAIL]":3}"#);
    let nested = vec![vec![Some("bo@example.org".to_owned())], vec![None]];
    assert_eq!(Safe(&nested).to_string(), r#"[["[EMAIL]"],[null]]"#);
}

#[test]
fn integers_that_are_card_numbers_are_scrubbed_like_text() {
    #[derive(Scrub)]
    struct Payment {
        reference: u64,
        stored: i64,
        order: u64,
        amount_cents: u32,
        // An id is kept as it is, even one that passes the card check.
        payment_id: u64,
    }
    let p = Payment {
        reference: 4111111111111111,
        stored: -5555555555554444,
        order: 20261128000123,
        amount_cents: 1200,
        payment_id: 4111111111111111,
    };
    assert_eq!(
        Safe(&p).to_string(),
        r#"{"reference":"[CARD]","stored":"[CARD]","order":20261128000123,"amount_cents":1200,"payment_id":4111111111111111}"#
    );
}

#[test]
fn text_and_partial_on_optional_fields() {
    #[derive(Scrub)]
    struct Account {
        #[scrub(partial = 4)]
        iban: Option<String>,
        #[scrub(text)]
        note: Option<std::net::Ipv4Addr>,
        #[scrub(partial = 4)]
        backup_iban: Option<String>,
    }
    let a =
        Account { iban: Some("DE89370400440532013000".into()), note: Some([10, 0, 0, 1].into()), backup_iban: None };
    assert_eq!(Safe(&a).to_string(), r#"{"iban":"****3000","note":"10.0.0.1","backup_iban":null}"#);
}
