//! Logs under pressure, with the real standard output of a child process (a pipe the test stops
//! reading): a loss shows in the stream as one WARN line where it starts and one with the count
//! where it ends; every line that reaches the stream is whole, even when the process exits while
//! its output is blocked; and every line is either written or counted as dropped, exactly.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use serde_json::Value;

fn child(mode: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_obs-log-pressure"))
        .arg(mode)
        .env_clear()
        .env("OBS_ENV", "production")
        .env("OTEL_TRACES_EXPORTER", "none")
        .env("OBS_PROFILING", "false")
        .env("PRESSURE_LINES", "40000")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Every line parsed (a partial line fails here).
fn parse(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a whole JSON line ({e}): {l:.200}")))
        .collect()
}

fn count(lines: &[Value], message_start: &str) -> usize {
    lines.iter().filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with(message_start))).count()
}

#[test]
fn a_blocked_output_that_recovers_says_so_in_the_stream() {
    let mut c = child("recover");
    let mut err = BufReader::new(c.stderr.take().unwrap());
    // The child logged everything while nobody read: its buffer is full, lines were dropped.
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "blocked");
    let mut stdout = c.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    c.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut report = String::new();
    err.read_to_string(&mut report).unwrap();
    assert!(c.wait().unwrap().success(), "{report}");
    let report: Value = serde_json::from_str(report.trim()).unwrap();
    let lines = parse(&reader.join().unwrap());

    let dropped = report["dropped"].as_u64().unwrap();
    assert!(dropped > 0, "nothing was dropped: the test did not block the output");
    let started = count(&lines, "log lines are being dropped");
    let ended: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"].as_str().is_some_and(|m| m.contains("log lines were dropped since")))
        .collect();
    assert_eq!((started, ended.len()), (1, 1), "one line when the loss starts, one when it ends");
    assert_eq!(ended[0]["level"], "WARN");
    assert_eq!(ended[0]["dropped_lines"].as_u64(), Some(dropped), "the count of the episode");
    // The start notice comes before the end notice.
    let at = |m: &str| lines.iter().position(|l| l["message"].as_str().is_some_and(|s| s.contains(m))).unwrap();
    assert!(at("being dropped") < at("dropped since"));
    let written = count(&lines, "pressure line") as u64;
    assert_eq!(written + dropped, report["produced"].as_u64().unwrap(), "written or counted, exactly");
    assert_eq!(report["flushed"], true);
}

#[test]
fn exiting_with_a_blocked_output_leaves_no_half_line() {
    let mut c = child("exit");
    let mut report = String::new();
    c.stderr.take().unwrap().read_to_string(&mut report).unwrap();
    // It exited although nobody read its output.
    assert!(c.wait().unwrap().success(), "{report}");
    let mut out = String::new();
    c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let report: Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(report["flushed"], false, "the output was blocked");
    let lines = parse(&out);
    assert!(out.is_empty() || out.ends_with('\n'), "the last line is whole");
    let written = count(&lines, "pressure line") as u64;
    // Counted as dropped: the lines refused by the full buffer, those still waiting at exit, and
    // the loss notice among them (one notice per episode; it may or may not have been written).
    let notices = 1 - count(&lines, "log lines are being dropped") as u64;
    let dropped = report["dropped"].as_u64().unwrap();
    assert_eq!(written + dropped, report["produced"].as_u64().unwrap() + notices, "written or counted, exactly");
}

/// In development the lines are written by the thread that logs: a short program's log lines come
/// in order with its own output (elsewhere a writer thread takes them, see the tests above).
#[test]
fn in_development_log_lines_keep_their_place_among_the_programs_own_output() {
    let out = Command::new(env!("CARGO_BIN_EXE_obs-log-pressure"))
        .arg("interleave")
        .env_clear()
        .env("OBS_ENV", "development")
        .env("OTEL_TRACES_EXPORTER", "none")
        .env("OBS_PROFILING", "false")
        .env("PRESSURE_LINES", "300")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = String::from_utf8(out.stdout).unwrap();
    let ours: Vec<&str> = out.lines().filter(|l| l.contains("log line") || l.starts_with("own output")).collect();
    assert_eq!(ours.len(), 600, "{out}");
    for (i, pair) in ours.chunks(2).enumerate() {
        let log: Value = serde_json::from_str(pair[0]).unwrap_or_else(|e| panic!("line {i} ({e}): {pair:?}"));
        assert_eq!((log["message"].as_str(), log["i"].as_u64()), (Some("log line"), Some(i as u64)), "{pair:?}");
        assert_eq!(pair[1], format!("own output {i}"), "line {i}: {pair:?}");
    }
}
