//! Property tests: emails, card numbers, tokens and values of sensitive keys planted in arbitrary
//! text, nested JSON and field names never survive into log lines or exported span attributes;
//! ids, digit runs that are not card numbers and ordinary text are left exactly as they were.

#[path = "support/capture.rs"]
mod capture;
#[path = "support/otlp.rs"]
mod otlp;

use std::sync::Mutex;
use std::time::Duration;

use obs_runtime::scrub::scrub_text;
use obs_runtime::traced_span;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestRunner};

/// A secret and the text that plants it.
#[derive(Debug, Clone)]
struct Planted {
    /// What must not appear anywhere in the output.
    secret: String,
    /// How it is written into the text.
    written: String,
}

fn email() -> impl Strategy<Value = Planted> {
    ("[a-z0-9][a-z0-9._+-]{0,15}", "[a-z0-9]{1,10}(\\.[a-z0-9]{1,8}){0,2}", "[a-z]{2,6}").prop_map(|(l, d, t)| {
        let e = format!("{l}@{d}.{t}");
        Planted { secret: e.clone(), written: e }
    })
}

/// A Luhn-valid number of 13–19 digits starting with 2–6, plain or in groups of 4.
fn card() -> impl Strategy<Value = Planted> {
    (2u8..=6, proptest::collection::vec(0u8..10, 11..=17), 0..3usize).prop_map(|(first, mut rest, sep)| {
        let mut digits = vec![first];
        digits.append(&mut rest);
        let sum: u32 = digits
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &d)| {
                let d = d as u32;
                if i % 2 == 0 {
                    let x = d * 2;
                    if x > 9 { x - 9 } else { x }
                } else {
                    d
                }
            })
            .sum();
        digits.push(((10 - sum % 10) % 10) as u8);
        let plain: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
        let written = match sep {
            0 => plain.clone(),
            s => plain
                .as_bytes()
                .chunks(4)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
                .join(if s == 1 { " " } else { "-" }),
        };
        Planted { secret: plain, written }
    })
}

fn token() -> impl Strategy<Value = Planted> {
    prop_oneof![
        ("[A-Za-z0-9_-]{10,30}", "[A-Za-z0-9_-]{10,40}", "[A-Za-z0-9_-]{10,40}").prop_map(|(h, p, s)| {
            let jwt = format!("eyJ{h}.{p}.{s}");
            Planted { secret: jwt.clone(), written: jwt }
        }),
        "[A-Za-z0-9]{20,40}".prop_map(|t| Planted { secret: t.clone(), written: format!("Bearer {t}") }),
    ]
}

/// Key variants: case, prefixes, separators.
const KEYS: &[&str] = &[
    "password",
    "Password",
    "user_password",
    "new-password",
    "password_confirmation",
    "cardNumber",
    "card_number",
    "card_cvc",
    "cvv",
    "api_key",
    "X-Api-Key",
    "access_token",
    "ssn",
    "social_security_number",
    "client_secret",
];

fn keyed() -> impl Strategy<Value = Planted> {
    (0..KEYS.len(), "S[a-zA-Z0-9]{9,20}", 0..10usize).prop_map(|(k, secret, form)| {
        let key = KEYS[k];
        let written = match form {
            0 => format!("{key}={secret}"),
            1 => format!("/callback?{key}={secret}&lang=en"),
            2 => format!(r#"{{"data":{{"user":{{"{key}":"{secret}","id":3}}}}}}"#),
            3 => format!(r#"Form {{ {key}: "{secret}", name: "x" }}"#),
            // Values wrapped in a type as `Debug` writes them, after a tab, after `=>`; a URL's
            // password (no key: the URL says it).
            5 => format!(r#"Form {{ {key}: Secret("{secret}"), name: "x" }}"#),
            6 => format!(r#"Form {{ {key}: Masked<String> {{ inner: "{secret}" }} }}"#),
            7 => format!("{key}=\t{secret}"),
            8 => format!("{{'{key}' => '{secret}'}}"),
            9 => format!("postgres://app:{secret}@db:5432/app"),
            _ => format!("{key}: {secret}"),
        };
        Planted { secret, written }
    })
}

fn planted() -> impl Strategy<Value = Planted> {
    prop_oneof![email(), card(), token(), keyed()]
}

/// Ordinary words between the planted values (word boundaries around them, as in real text).
fn words() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-zA-Z]{1,10}|[0-9]{1,6}|[,.;!?()]", 0..6).prop_map(|w| w.join(" "))
}

fn text_with_secrets() -> impl Strategy<Value = (String, Vec<String>)> {
    proptest::collection::vec((words(), planted()), 1..4).prop_flat_map(|parts| {
        words().prop_map(move |tail| {
            let mut text = String::new();
            let mut secrets = Vec::new();
            for (w, p) in &parts {
                text.push_str(w);
                text.push(' ');
                text.push_str(&p.written);
                text.push(' ');
                secrets.push(p.secret.clone());
            }
            text.push_str(&tail);
            (text, secrets)
        })
    })
}

/// Digit runs that are no card: ids, timestamps, order numbers (any Luhn-invalid run, and runs
/// of any length starting with 0, 1, 7, 8 or 9).
fn innocent_digits() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,12}",
        "[01789][0-9]{12,24}",
        "[0-9]{20,30}",
        "[2-6][0-9]{12,18}".prop_filter("not Luhn-valid", |s| !luhn(s)),
    ]
}

fn luhn(s: &str) -> bool {
    let sum: u32 = s
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = (c - b'0') as u32;
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[traced_span("prop.record", fields(text, detail = %text))]
fn span_with(text: &str) {
    obs_runtime::trace::record("note", text.to_owned());
    tracing::info!(payload = text, "received {text}");
}

#[test]
fn nothing_planted_survives_and_nothing_innocent_changes() {
    let (receiver, url) = otlp::Receiver::start();
    let (captured, config) = capture::config(url);
    let config = config.queue_capacity(100_000);
    let guard = obs_runtime::init(config).unwrap();

    let mut runner = TestRunner::new(PropConfig { cases: 512, ..PropConfig::default() });
    let all_secrets = Mutex::new(Vec::new());
    runner
        .run(&text_with_secrets(), |(text, secrets)| {
            captured.clear();
            span_with(&text);
            let logged = captured.text();
            prop_assert!(!logged.is_empty());
            for s in &secrets {
                prop_assert!(!logged.contains(s.as_str()), "{s:?} survived in the log line {logged}");
            }
            all_secrets.lock().unwrap().extend(secrets);
            Ok(())
        })
        .unwrap();

    // Ids and innocent digits, in text and under kept keys, are left alone.
    runner
        .run(&(words(), innocent_digits(), words()), |(a, digits, b)| {
            let text = format!("{a} {digits} {b}");
            prop_assert_eq!(scrub_text(&text), text.as_str());
            captured.clear();
            tracing::info!(user_id = digits.as_str(), order = digits.as_str(), "order {digits}");
            let logged = captured.text();
            let line: serde_json::Value = serde_json::from_str(logged.trim()).unwrap();
            prop_assert_eq!(line["user_id"].as_str(), Some(digits.as_str()));
            prop_assert_eq!(line["order"].as_str(), Some(digits.as_str()));
            prop_assert_eq!(line["message"].as_str().map(str::to_owned), Some(format!("order {digits}")));
            Ok(())
        })
        .unwrap();

    // Scrubbing twice changes nothing more, and never panics on any input (text made of the
    // pieces the scrubber reacts to: `scrub::text`'s unit tests).
    runner
        .run(&any::<String>(), |s| {
            let once = scrub_text(&s).into_owned();
            prop_assert_eq!(scrub_text(&once), once.as_str());
            Ok(())
        })
        .unwrap();

    assert!(guard.shutdown());
    let secrets = all_secrets.into_inner().unwrap();
    let spans = receiver.wait_for(512, Duration::from_secs(10));
    assert!(spans.len() >= 512, "{} spans", spans.len());
    let exported = format!("{spans:?}");
    for s in &secrets {
        assert!(!exported.contains(s.as_str()), "{s:?} survived in an exported span");
    }
}
