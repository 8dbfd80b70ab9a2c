//! Minimal HTTP/1.1 pieces the benchmarks share (no HTTP client or server dependency): reading
//! a message head, and an OTLP/HTTP sink that accepts exports and answers 200 without decoding,
//! so that the cost measured is the application's, not the receiver's.
#![allow(dead_code)] // each benchmark uses part of it

use std::io::{BufRead, Read, Write};
use std::net::TcpListener;

/// Reads a message head: its first line (`None` at end of stream) and its `Content-Length`.
pub fn read_head(reader: &mut impl BufRead) -> Option<(String, usize)> {
    let mut first = String::new();
    if reader.read_line(&mut first).unwrap_or(0) == 0 {
        return None;
    }
    let mut length = 0;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            return Some((first, length));
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().ok()?;
        }
    }
}

/// Starts the OTLP/HTTP sink on loopback; returns its `/v1/traces` URL.
pub fn otlp_sink() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                while let Some((_, length)) = read_head(&mut reader) {
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err()
                        || conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    url
}
