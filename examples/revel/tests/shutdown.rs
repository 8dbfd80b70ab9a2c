//! The real binary under SIGTERM with a client that never finishes its request (a body trickled
//! a byte at a time): it exits within the drain deadline plus the telemetry deadline, not when
//! the client is done, and the abandoned request is still accounted for.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[cfg(unix)]
#[test]
fn sigterm_with_a_trickling_client_exits_within_the_deadlines() {
    let addr = free_port();
    let dir = std::env::temp_dir().join(format!("revel-shutdown-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut revel = Command::new(env!("CARGO_BIN_EXE_revel"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("REVEL_ADDR", addr.to_string())
        .env("REVEL_DRAIN_SECONDS", "1")
        .env("OBS_SPANS_FILE", dir.join("spans.jsonl"))
        .env("DATABASE_URL", format!("sqlite://{}?mode=rwc", dir.join("revel.db").display()))
        .env("OBS_PROFILING", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Its log lines, read as they come (a full pipe would block it).
    let stdout = revel.stdout.take().unwrap();
    let lines = std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>());

    // Up when it answers (however long a loaded machine takes to start it).
    let up = Instant::now();
    let healthy = loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: revel\r\nconnection: close\r\n\r\n").unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            break out;
        }
        assert!(up.elapsed() < Duration::from_secs(120), "revel did not start");
        assert!(revel.try_wait().unwrap().is_none(), "revel exited at start");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(healthy.starts_with("HTTP/1.1 200"), "{healthy}");

    // A body announced at 10,000 bytes, sent one byte every 200 ms: it would take over half an
    // hour. `Expect: 100-continue` makes the server say when the handler starts reading it.
    let mut slow = TcpStream::connect(addr).unwrap();
    // A bound for a server that never reads the body, not a timing: the answer comes at once.
    slow.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    slow.write_all(
        b"POST /register HTTP/1.1\r\nhost: revel\r\nx-request-id: req-trickle\r\ncontent-type: application/json\r\ncontent-length: 10000\r\nexpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    // The request is in the handler before the signal comes: waited for, not slept on.
    let mut interim = Vec::new();
    let mut byte = [0u8];
    while !interim.ends_with(b"\r\n\r\n") {
        assert_eq!(
            slow.read(&mut byte).expect("no 100 Continue"),
            1,
            "the connection closed: {}",
            String::from_utf8_lossy(&interim)
        );
        interim.push(byte[0]);
    }
    assert!(interim.starts_with(b"HTTP/1.1 100"), "{}", String::from_utf8_lossy(&interim));
    slow.write_all(b"{").unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..9_999 {
            std::thread::sleep(Duration::from_millis(200));
            if slow.write_all(b" ").is_err() {
                return; // the server closed the connection
            }
        }
    });

    let status = Command::new("kill").args(["-TERM", &revel.id().to_string()]).status().unwrap();
    assert!(status.success());
    let signalled = Instant::now();
    let exit = loop {
        if let Some(exit) = revel.try_wait().unwrap() {
            break exit;
        }
        // Drain 1 s, runtime 1 s, telemetry 3 s: 5 s; the margin is for a loaded machine. Without
        // a bounded drain it waits for the client (minutes), or for the request timeout (30 s).
        if signalled.elapsed() > Duration::from_secs(20) {
            let _ = revel.kill();
            panic!("revel still running 20 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let lines = lines.join().unwrap();
    drop(trickle);
    let _ = std::fs::remove_dir_all(&dir);

    let json: Vec<serde_json::Value> = lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(
        json.iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("after the drain deadline"))),
        "a warning says requests were cut: {lines:#?}"
    );
    let access = json
        .iter()
        .find(|l| l["request_id"] == "req-trickle" && l["target"] == "obs::access")
        .unwrap_or_else(|| panic!("the abandoned request's access line: {lines:#?}"));
    assert_eq!(access["status_code"], 499);
    assert_eq!(access["endpoint"], "/register");
}
