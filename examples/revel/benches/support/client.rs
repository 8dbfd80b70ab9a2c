//! The load benchmarks' client side: keep-alive connections, Revel's request mix, and Revel
//! processes started on a free port (optionally under a wrapper such as valgrind).
#![allow(dead_code)] // each benchmark uses part of it

#[path = "../../../../benches/support/http1.rs"]
pub mod http1;
#[path = "../../../../benches/support/machine.rs"]
pub mod machine;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A keep-alive HTTP/1.1 connection.
pub struct Conn {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        // A server that stops answering fails the benchmark instead of hanging it.
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Conn { reader: BufReader::new(s.try_clone().unwrap()), writer: s }
    }

    pub fn request(&mut self, method: &str, path: &str, body: &str) -> u16 {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: revel\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.writer.write_all(req.as_bytes()).unwrap();
        let (line, length) = http1::read_head(&mut self.reader).expect("a response");
        let status = line.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        status
    }
}

/// The request mix, by `i % 10`: mostly reads and free checkouts, some registrations and
/// questionnaires (the simulated external services answer at once: the cost measured is the
/// service's own).
enum Kind {
    Eligibility,
    Checkout,
    Register,
    Submission,
    Health,
}

fn kind(i: u64) -> Kind {
    match i % 10 {
        0..=3 => Kind::Eligibility,
        4..=6 => Kind::Checkout,
        7 => Kind::Register,
        8 => Kind::Submission,
        _ => Kind::Health,
    }
}

/// Sends request `i` of the mix; its status.
pub fn one_request(c: &mut Conn, i: u64) -> u16 {
    let user = 2 + i % 19;
    match kind(i) {
        Kind::Eligibility => c.request("GET", &format!("/events/1/eligibility?user_id={user}"), ""),
        Kind::Checkout => c.request(
            "POST",
            "/events/1/tiers/2/checkout",
            &format!(r#"{{"user_id":{user},"email":"u{user}@example.org"}}"#),
        ),
        Kind::Register => c.request(
            "POST",
            "/register",
            &format!(r#"{{"email":"n{i}@example.org","password":"correct horse battery"}}"#),
        ),
        Kind::Submission => c.request(
            "POST",
            "/questionnaires/1/submissions",
            &format!(
                r#"{{"user_id":{user},"answers":[1,0,2],"free_text":"I help at the door of every meetup we run"}}"#
            ),
        ),
        Kind::Health => c.request("GET", "/healthz", ""),
    }
}

/// What request `i` of the mix is (for a failure's message).
pub fn what(i: u64) -> &'static str {
    match kind(i) {
        Kind::Eligibility => "GET /events/1/eligibility",
        Kind::Checkout => "POST /events/1/tiers/2/checkout",
        Kind::Register => "POST /register",
        Kind::Submission => "POST /questionnaires/1/submissions",
        Kind::Health => "GET /healthz",
    }
}

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(env: &[(&str, &str)]) -> Server {
    start_wrapped(env, &[], Duration::from_secs(5))
}

/// [`start`] under `wrapper` (e.g. `["valgrind", "--tool=callgrind"]`), waiting up to `patience`.
pub fn start_wrapped(env: &[(&str, &str)], wrapper: &[&str], patience: Duration) -> Server {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(env!("CARGO_BIN_EXE_revel"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_revel")),
    };
    // A fresh database file per server (the load bench's runs are compared with each other).
    let db = std::env::temp_dir().join(format!("revel-bench-{}-{port}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    cmd.env("REVEL_ADDR", addr.to_string())
        .env("DATABASE_URL", format!("sqlite://{}?mode=rwc", db.display()))
        .env("REVEL_STRIPE_WEBHOOK_SECRET", "whsec_bench")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for svc in ["STRIPE", "LLM", "EMAIL", "PDF"] {
        cmd.env(format!("REVEL_{svc}_LATENCY_MS"), "0").env(format!("REVEL_{svc}_FAILURE_RATE"), "0");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let server = Server { child: cmd.spawn().unwrap(), addr };
    let mut server = server;
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return server;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("revel exited before listening on {addr}: {status}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("revel did not start on {addr}");
}

/// Each of `clients` connections sends the mix's requests `from..from + count` (its own sequence:
/// the same requests on every machine, however fast), one after the other; their latencies in µs.
pub fn load_counted(addr: SocketAddr, clients: usize, from: u64, count: u64) -> Vec<u64> {
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let first = c as u64 * 1_000_003 + from;
                (first..first + count)
                    .map(|i| {
                        let t = Instant::now();
                        let status = one_request(&mut conn, i);
                        assert!(
                            status == 200 || status == 409,
                            "status {status} for request {i} of the mix ({})",
                            what(i)
                        );
                        t.elapsed().as_micros() as u64
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
}

/// `clients` connections for `time`; requests per second and every latency in µs.
pub fn load(addr: SocketAddr, clients: usize, time: Duration) -> (f64, Vec<u64>) {
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let mut lat = Vec::new();
                let mut i = c as u64 * 1_000_003;
                while start.elapsed() < time {
                    let t = Instant::now();
                    let status = one_request(&mut conn, i);
                    assert!(status == 200 || status == 409, "status {status} for request {i} of the mix ({})", what(i));
                    lat.push(t.elapsed().as_micros() as u64);
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let mut all: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    all.sort_unstable();
    (all.len() as f64 / start.elapsed().as_secs_f64(), all)
}
