//! Realistic mixed traffic against a running Revel, so every dashboard has data within a minute:
//! eligibility checks, free and paid checkouts (confirmed by signed Stripe webhooks, some
//! refunded), questionnaires created and submitted, registrations, membership requests, publications and
//! cancellations, plus the failures a real service sees (forged webhooks, unknown paths, sold-out
//! tiers).
//!
//! ```text
//! cargo run -p revel --bin revel-traffic -- [--addr 127.0.0.1:8000] [--seconds 60] [--workers 4]
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use revel::external::{random_unit, sign_webhook};

/// Realistic mixed traffic against a running Revel (every dashboard has data within a minute).
#[derive(clap::Parser)]
#[command(name = "revel-traffic", version)]
struct Options {
    /// Revel's address.
    #[arg(long, env = "REVEL_ADDR", default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    workers: u64,
    /// The Stripe webhook signing secret Revel checks (whsec_…).
    #[arg(long, env = "REVEL_STRIPE_WEBHOOK_SECRET", default_value = "whsec_revel_dev", hide_env_values = true)]
    secret: String,
}

/// One request: status (0 when the connection failed) and body.
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return (0, String::new()) };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: revel\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    if s.read_to_string(&mut out).is_err() || out.len() < 12 {
        return (0, String::new());
    }
    (out[9..12].parse().unwrap_or(0), out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

#[derive(Default)]
struct Stat {
    latencies_us: Vec<u64>,
    by_status: BTreeMap<u16, u64>,
}

type Stats = Arc<Mutex<BTreeMap<&'static str, Stat>>>;

fn timed(stats: &Stats, flow: &'static str, f: impl FnOnce() -> (u16, String)) -> (u16, String) {
    let start = Instant::now();
    let (status, body) = f();
    let us = start.elapsed().as_micros() as u64;
    let mut s = stats.lock().unwrap();
    let stat = s.entry(flow).or_default();
    stat.latencies_us.push(us);
    *stat.by_status.entry(status).or_default() += 1;
    (status, body)
}

fn webhook(o: &Options, kind: &str, session: &str, secret: &str) -> (u16, String) {
    let body = format!(r#"{{"type":"{kind}","data":{{"session_id":"{session}"}}}}"#);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let sig = sign_webhook(secret, body.as_bytes(), now);
    http(o.addr, "POST", "/stripe/webhook", &[("stripe-signature", &sig)], &body)
}

/// One step of a simulated user.
fn step(o: &Options, stats: &Stats, user: u64) {
    let a = o.addr;
    let roll = random_unit();
    let member = 2 + user % 19;
    match roll {
        r if r < 0.27 => {
            let event = 1 + (user % 2);
            timed(stats, "eligibility", || {
                http(a, "GET", &format!("/events/{event}/eligibility?user_id={user}"), &[], "")
            });
        }
        r if r < 0.42 => {
            let body = format!(r#"{{"user_id":{member},"email":"user{member}@example.org"}}"#);
            timed(stats, "checkout (free)", || {
                http(a, "POST", "/events/1/tiers/2/checkout", &[("x-user-id", &member.to_string())], &body)
            });
        }
        r if r < 0.62 => {
            let body = format!(
                r#"{{"user_id":{member},"email":"user{member}@example.org","card_number":"4242 4242 4242 4242","cvv":"123"}}"#
            );
            let (status, out) = timed(stats, "checkout (online)", || {
                http(a, "POST", "/events/1/tiers/1/checkout", &[("x-user-id", &member.to_string())], &body)
            });
            if status == 200
                && let Some(session) = out
                    .split("checkout_url\":\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .and_then(|u| u.rsplit('/').next())
            {
                timed(stats, "stripe webhook", || webhook(o, "checkout.session.completed", session, &o.secret));
                if random_unit() < 0.1 {
                    timed(stats, "stripe refund", || webhook(o, "charge.refunded", session, &o.secret));
                }
            }
        }
        r if r < 0.74 => {
            let answers = if random_unit() < 0.7 { "[1,0,2]" } else { "[0,1,1]" };
            let text =
                if random_unit() < 0.8 { "I run a local meetup and would love to help out at the door" } else { "yes" };
            let body = format!(r#"{{"user_id":{member},"answers":{answers},"free_text":"{text}"}}"#);
            timed(stats, "questionnaire", || http(a, "POST", "/questionnaires/1/submissions", &[], &body));
        }
        r if r < 0.82 => {
            let body = format!(
                r#"{{"email":"new{user}-{}@example.org","password":"correct horse battery"}}"#,
                (roll * 1e9) as u64
            );
            timed(stats, "register", || http(a, "POST", "/register", &[], &body));
        }
        r if r < 0.87 => {
            let body = format!(r#"{{"user_id":{}}}"#, 20 + user % 40);
            timed(stats, "membership", || http(a, "POST", "/organizations/1/membership-requests", &[], &body));
        }
        r if r < 0.91 => {
            let body = r#"{"name":"Pop-up","visibility":"public","tiers":[{"price_cents":1200,"capacity":50,"payment_method":"online"}]}"#;
            let (status, out) = timed(stats, "create event", || http(a, "POST", "/organizations/1/events", &[], body));
            if status == 200
                && let Some(id) = out.split("\"event_id\":").nth(1).and_then(|s| s.split([',', '}']).next())
            {
                timed(stats, "publish", || http(a, "POST", &format!("/events/{id}/publish"), &[], ""));
                if random_unit() < 0.3 {
                    timed(stats, "cancel", || http(a, "POST", &format!("/events/{id}/cancel"), &[], ""));
                }
            }
        }
        r if r < 0.915 => {
            let mode = ["automatic", "manual", "hybrid"][user as usize % 3];
            let body = format!(
                r#"{{"evaluation_mode":"{mode}","questions":[{{"correct":1}},{{"correct":0,"fatal":true}}],"pass_ratio":0.5}}"#
            );
            let (status, out) =
                timed(stats, "create questionnaire", || http(a, "POST", "/organizations/1/questionnaires", &[], &body));
            // A manual one gets an application, which a reviewer decides on.
            if status == 200
                && mode == "manual"
                && let Some(id) = out.split("\"questionnaire_id\":").nth(1).and_then(|s| s.split([',', '}']).next())
            {
                let answer = r#"{"user_id":%U,"answers":[1,0],"free_text":"I help run the meetup"}"#;
                let answer = answer.replace("%U", &user.to_string());
                timed(stats, "submit (manual)", || {
                    http(a, "POST", &format!("/questionnaires/{id}/submissions"), &[], &answer)
                });
                let decision = if random_unit() < 0.7 { r#"{"approved":true}"# } else { r#"{"approved":false}"# };
                let path = format!("/questionnaires/{id}/submissions/{user}/review");
                timed(stats, "review", || http(a, "POST", &path, &[], decision));
            }
        }
        // Rare enough (about 2 % of webhooks) to stay under the critical alert's 5 %.
        r if r < 0.92 => {
            timed(stats, "forged webhook", || webhook(o, "checkout.session.completed", "cs_forged", "whsec_wrong"));
        }
        r if r < 0.96 => {
            timed(stats, "unknown path", || http(a, "GET", &format!("/wp-login.php?u={user}"), &[], ""));
        }
        _ => {
            timed(stats, "sold-out tier", || {
                http(a, "POST", "/events/3/tiers/5/checkout", &[], r#"{"user_id":1,"email":"staff@example.org"}"#)
            });
        }
    }
}

fn main() {
    let o = Arc::new(<Options as clap::Parser>::parse());
    if http(o.addr, "GET", "/healthz", &[], "").0 != 200 {
        eprintln!("revel-traffic: no Revel at {} (start it with `cargo run -p revel`)", o.addr);
        std::process::exit(1);
    }
    // Event 3 (draft, tier 5 holds 3 seats) is published so that its tier sells out.
    http(o.addr, "POST", "/events/3/publish", &[], "");
    let stats: Stats = Arc::default();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..o.workers)
        .map(|w| {
            let (o, stats, done, stop) = (o.clone(), stats.clone(), done.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut user = w;
                while !stop.load(Ordering::Relaxed) {
                    step(&o, &stats, 2 + user % 45);
                    user += o.workers;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    while start.elapsed() < Duration::from_secs(o.seconds) {
        std::thread::sleep(Duration::from_millis(500));
        let n = done.load(Ordering::Relaxed);
        let errors: u64 = stats
            .lock()
            .unwrap()
            .values()
            .flat_map(|s| s.by_status.iter())
            .filter(|(c, _)| **c == 0 || **c >= 500)
            .map(|(_, n)| n)
            .sum();
        eprint!(
            "\r{:>4}s  {n} steps, {:.0}/s, {errors} server errors   ",
            start.elapsed().as_secs(),
            n as f64 / start.elapsed().as_secs_f64()
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    eprintln!();
    println!("{:<18} {:>7} {:>28} {:>9} {:>9}", "flow", "count", "statuses", "p50 ms", "p99 ms");
    for (flow, stat) in stats.lock().unwrap().iter_mut() {
        stat.latencies_us.sort_unstable();
        let q = |p: f64| stat.latencies_us[((stat.latencies_us.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        let statuses: Vec<String> = stat.by_status.iter().map(|(c, n)| format!("{c}:{n}")).collect();
        println!(
            "{:<18} {:>7} {:>28} {:>9.1} {:>9.1}",
            flow,
            stat.latencies_us.len(),
            statuses.join(" "),
            q(0.5),
            q(0.99)
        );
    }
    println!("Open Grafana (or curl {}/metrics) to see the business metrics move.", o.addr);
}
