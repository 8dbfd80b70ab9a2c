//! The README's quickstart as a new user follows it: the snippets it shows are this crate's files
//! (so they compile), and the service they make answers, logs, traces and counts as it says.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Each README block introduced by `<!-- quickstart: FILE -->` appears verbatim in that file.
#[test]
fn the_readme_shows_this_crate_verbatim() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(here.join("../../README.md")).unwrap();
    let mut checked = Vec::new();
    let mut rest = readme.as_str();
    while let Some(at) = rest.find("<!-- quickstart: ") {
        rest = &rest[at + "<!-- quickstart: ".len()..];
        let (file, after) = rest.split_once(" -->").expect("a marker ends with -->");
        let body = after.trim_start().split_once('\n').expect("a fenced block follows the marker").1;
        let block = &body[..body.find("```").expect("the block is closed")];
        let source = std::fs::read_to_string(here.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            source.contains(block),
            "the README's block for {file} is not in {file} (edit both together):\n{block}"
        );
        checked.push(file.to_owned());
        rest = after;
    }
    checked.sort();
    assert_eq!(checked, ["Cargo.toml", "metrics.toml", "src/main.rs", "src/main.rs"], "the README's five steps");
}

/// The service under test, killed if the test fails before stopping it.
struct Service(std::process::Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection; the whole response.
fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn the_quickstart_service_answers_logs_traces_and_counts() {
    let dir = std::env::temp_dir().join(format!("obs-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spans_file = dir.join("spans.jsonl");
    let mut service = Service(
        Command::new(env!("CARGO_BIN_EXE_quickstart"))
            .env_clear()
            .env("QUICKSTART_ADDR", "127.0.0.1:0")
            .env("OBS_SPANS_FILE", &spans_file)
            .env("RUST_LOG", "info")
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let child = &mut service.0;
    // Every stdout line, as it comes; the address from the `listening` line.
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in stdout.lines() {
            let _ = lines_tx.send(line.unwrap());
        }
    });
    let mut log = Vec::new();
    let addr = loop {
        let line = lines.recv_timeout(Duration::from_secs(120)).expect("a `listening` line on stdout");
        log.push(line.clone());
        if line.contains("\"listening\"") {
            let at = line.find("\"addr\":\"").expect("the address field") + "\"addr\":\"".len();
            break line[at..at + line[at..].find('"').unwrap()].to_owned();
        }
    };

    let hello = get(&addr, "/hello/ada@example.com");
    assert!(hello.starts_with("HTTP/1.1 200"), "{hello}");
    assert!(hello.ends_with("Hello, ada@example.com!"), "{hello}");
    assert!(hello.to_ascii_lowercase().contains("x-request-id: "), "every response carries its request id: {hello}");
    let metrics = get(&addr, "/metrics");
    assert!(metrics.contains("quickstart_greetings_total{style=\"casual\"} 1\n"), "{metrics}");
    assert!(
        metrics.contains(
            "quickstart_http_requests_total{method=\"GET\",endpoint=\"/hello/{name}\",status_code=\"200\"} 1\n"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE quickstart_http_request_duration_seconds histogram"), "{metrics}");

    // Ctrl-C: a graceful stop, and the guard flushes the last lines and spans.
    let killed = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "the service exits cleanly on Ctrl-C: {status}");
    reader.join().unwrap();
    log.extend(lines.try_iter());

    let composing = log.iter().find(|l| l.contains("composing a greeting")).expect("the handler's log line");
    assert!(composing.contains("\"name\":\"[EMAIL]\""), "the email is scrubbed: {composing}");
    assert!(!log.iter().any(|l| l.contains("ada@example.com")), "no line carries the email: {log:#?}");
    assert!(composing.contains("\"trace_id\":\""), "the line links to its trace: {composing}");
    assert!(composing.contains("\"endpoint\":\"/hello/{name}\""), "the request's context: {composing}");
    let access = log.iter().find(|l| l.contains("\"status_code\":200")).expect("an access line");
    assert!(access.contains("\"path\":\"/hello/[EMAIL]\""), "the path is scrubbed too: {access}");

    let spans = std::fs::read_to_string(&spans_file).expect("the development spans file");
    assert!(spans.contains("\"name\":\"greeting.compose\""), "{spans}");
    assert!(spans.contains("\"name\":\"GET /hello/{name}\""), "{spans}");
    assert!(!spans.contains("ada@example.com"), "{spans}");
    let _ = std::fs::remove_dir_all(&dir);
}
