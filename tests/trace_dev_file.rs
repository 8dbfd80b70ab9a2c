//! Development without a collector: spans go, as JSON lines, to a local file; `init` says that
//! development defaults apply when `OBS_ENV` is not set.

#[path = "support/capture.rs"]
mod capture;

use obs_runtime::config::Config;
use obs_runtime::traced_span;

#[traced_span("ticket.checkout", fields(tier_id = tier, note = "quote \" and\nnewline"), err)]
fn checkout(tier: u64) -> Result<u64, String> {
    lock(tier);
    if tier == 0 { Err("sold out".into()) } else { Ok(tier) }
}

#[traced_span("ticket.lock_tier")]
fn lock(tier: u64) -> u64 {
    tier
}

#[test]
fn spans_land_in_a_json_lines_file() {
    let path = std::env::temp_dir().join(format!("obs-spans-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let logs = capture::Captured::default();
    let config = Config::from_vars(|_| None).unwrap().spans_file(&path).log_writer(logs.writer());
    let guard = obs_runtime::init(config).unwrap();
    let first = logs.text().lines().next().map(str::to_owned).unwrap_or_default();
    assert!(
        first.contains(r#""level":"INFO""#)
            && first.contains("OBS_ENV is not set: development defaults")
            && first.contains(r#""sampling_ratio":1.0"#),
        "{first}"
    );
    checkout(4).unwrap();
    checkout(0).unwrap_err();
    assert!(guard.shutdown());
    let text = std::fs::read_to_string(&path).unwrap();
    let spans: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
    assert_eq!(spans.len(), 4, "{text}");
    let failed = spans.iter().find(|s| s["name"] == "ticket.checkout" && s["attributes"]["tier_id"] == 0).unwrap();
    assert_eq!(failed["status"]["error"], "sold out");
    assert_eq!(failed["attributes"]["note"], "quote \" and\nnewline");
    let child = spans.iter().find(|s| s["name"] == "ticket.lock_tier" && s["trace_id"] == failed["trace_id"]).unwrap();
    assert_eq!(child["parent_span_id"], failed["span_id"]);
    assert_eq!(failed["trace_id"].as_str().unwrap().len(), 32);
    let _ = std::fs::remove_file(&path);
}
