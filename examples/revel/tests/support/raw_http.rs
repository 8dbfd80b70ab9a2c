//! One HTTP/1.1 request to the real binary, over a plain TCP connection, and the whole answer
//! (status line, headers, body) as text: what the end-to-end tests of the binary read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

pub fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: revel\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
