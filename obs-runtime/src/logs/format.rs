//! The two pieces of JSON the log lines need, written straight into the line.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// `s` as a JSON string (quoted, escaped). Checked eight bytes at a time: this runs over every
/// field of every log line, and most are short and clean. A tail shorter than a word is checked
/// as the string's last eight bytes (overlapping bytes already checked), a string shorter than
/// a word byte by byte: no copy into a padded word (its `memcpy` of a variable length was a
/// fifth of a line's time).
pub(crate) fn json_str(out: &mut String, s: &str) {
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push('"');
    let mut start = 0;
    let mut i = 0;
    while i + 8 <= b.len() {
        let word = u64::from_le_bytes(b[i..i + 8].try_into().expect("eight bytes"));
        if needs_escape(word) {
            escape(out, s, &mut start, i, i + 8);
        }
        i += 8;
    }
    if i < b.len() {
        let dirty = match b.len().checked_sub(8) {
            Some(last) => needs_escape(u64::from_le_bytes(b[last..].try_into().expect("eight bytes"))),
            None => b.iter().any(|&c| special(c)),
        };
        if dirty {
            escape(out, s, &mut start, i, b.len());
        }
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Whether a byte needs escaping in JSON (see [`needs_escape`]).
#[inline]
fn special(c: u8) -> bool {
    c < 0x20 || c == b'"' || c == b'\\' || c == 0x7f
}

/// Escapes the special bytes of `s[from..to]`: what precedes each, from `start` on, is copied
/// first; `start` moves past it.
#[cold]
fn escape(out: &mut String, s: &str, start: &mut usize, from: usize, to: usize) {
    for (j, &c) in s.as_bytes().iter().enumerate().take(to).skip(from) {
        let esc = match c {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f | 0x7f => "",
            _ => continue,
        };
        out.push_str(&s[*start..j]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{c:04x}");
        } else {
            out.push_str(esc);
        }
        *start = j + 1;
    }
}

/// Whether any of the eight bytes of `w` needs escaping in JSON: a control character (below
/// 0x20, or 0x7f), `"` or `\\`. Bytes of multi-byte UTF-8 characters (0x80 and up) never do.
#[inline]
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Non-zero exactly when some byte of `x` is below `n` (n ≤ 0x80), bytes ≥ 0x80 excluded.
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let equal = |x: u64, c: u8| below(x ^ (ONES * u64::from(c)), 1);
    (below(w, 0x20) | equal(w, b'"') | equal(w, b'\\') | equal(w, 0x7f)) != 0
}

/// `t` as RFC 3339 in UTC with microseconds: `2026-11-28T20:39:22.123456Z`. The part up to the
/// second is remembered per thread: lines come many to a second.
pub(crate) fn rfc3339(out: &mut String, t: SystemTime) {
    thread_local! {
        static SECOND: std::cell::Cell<(u64, [u8; 27])> = const { std::cell::Cell::new((u64::MAX, [0; 27])) };
    }
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (cached, mut buf) = SECOND.with(std::cell::Cell::get);
    if cached != secs {
        buf = full_rfc3339(secs);
        SECOND.with(|c| c.set((secs, buf)));
    }
    let mut micros = d.subsec_micros();
    for i in (20..26).rev() {
        buf[i] = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.push_str(std::str::from_utf8(&buf).expect("ASCII digits"));
}

/// `secs` since the epoch as `2026-11-28T20:39:22.000000Z`.
fn full_rfc3339(secs: u64) -> [u8; 27] {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, dd) = civil_from_days(days);
    // Digits pushed by hand: `write!` with six padded arguments costs more than the rest of
    // the timestamp (this runs for every log line).
    let mut buf = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y.clamp(0, 9999) as u64);
    put(5, 2, m.into());
    put(8, 2, dd.into());
    put(11, 2, rem / 3600);
    put(14, 2, rem / 60 % 60);
    put(17, 2, rem % 60);
    buf
}

/// Writes `v` if it is a whole number of thousandths below a billion in magnitude (`12.875`,
/// `250.0`), as `ryu` writes it (the shortest text that reads back the same, which for such a
/// number is its decimal digits), with integer arithmetic; `false` (nothing written) for any
/// other number.
pub(crate) fn thousandths(out: &mut String, v: f64) -> bool {
    // Finite only (callers pass finite values; NaN fails the comparison), and not `-0.0`.
    if v.is_nan() || v.abs() >= 1e9 || (v == 0.0 && v.is_sign_negative()) {
        return false;
    }
    let n = (v * 1000.0).round();
    if n / 1000.0 != v {
        return false;
    }
    let n = n as i64;
    if n < 0 {
        out.push('-');
    }
    let n = n.unsigned_abs();
    out.push_str(itoa::Buffer::new().format(n / 1000));
    let frac = (n % 1000) as u32;
    let digits = [b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8];
    let len = match frac {
        f if f % 100 == 0 => 1,
        f if f % 10 == 0 => 2,
        _ => 3,
    };
    out.push('.');
    out.push_str(std::str::from_utf8(&digits[..len]).expect("digits"));
    true
}

/// `v`'s low `width` hex digits, lower-case (`width` even, at most 32: trace and span ids),
/// two digits per byte from a table, written into a buffer and pushed once (a `push` per digit
/// was a tenth of an access line's time; a digit at a time, 0.8k instructions per line).
pub(crate) fn hex(out: &mut String, v: u128, width: usize) {
    /// Each byte's two digits.
    const PAIRS: [[u8; 2]; 256] = {
        let digits = b"0123456789abcdef";
        let mut t = [[0; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [digits[i >> 4], digits[i & 15]];
            i += 1;
        }
        t
    };
    debug_assert!(width.is_multiple_of(2) && width <= 32, "{width}");
    let bytes = v.to_be_bytes();
    let mut buf = [0u8; 32];
    let n = width.min(32) / 2;
    for (pair, b) in buf.chunks_exact_mut(2).zip(&bytes[16 - n..]) {
        pair.copy_from_slice(&PAIRS[usize::from(*b)]);
    }
    out.push_str(std::str::from_utf8(&buf[..2 * n]).expect("hex digits"));
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Whether a pretty-format value is written quoted (its `Debug` form): when it is empty, holds a
/// space, a quote or `=` (it would not read back as one `key=value`), or a control character (a
/// newline would start a forged line).
pub(crate) fn pretty_needs_quotes(value: &str) -> bool {
    value.is_empty() || value.chars().any(|c| matches!(c, ' ' | '"' | '=') || c.is_control())
}

/// A pretty-format message: as it is, control characters escaped (`\n`), so that it stays on its
/// line.
pub(crate) fn pretty_message(out: &mut String, message: &str) {
    if !message.chars().any(char::is_control) {
        out.push_str(message);
        return;
    }
    for c in message.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        let at = |secs: u64, micros: u32| {
            let mut s = String::new();
            rfc3339(&mut s, UNIX_EPOCH + Duration::new(secs, micros * 1000));
            s
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(at(1_795_552_762, 123_456), "2026-11-24T20:39:22.123456Z");
        // The same second again (from the per-thread cache), other microseconds.
        assert_eq!(at(1_795_552_762, 7), "2026-11-24T20:39:22.000007Z");
        assert_eq!(at(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
    }

    #[test]
    fn thousandths_are_written_as_ryu_writes_them() {
        let mut checked = 0;
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut values: Vec<f64> =
            vec![0.0, -0.0, 0.001, 0.01, 0.1, 1.0, 12.875, 100.5, 999_999_999.999, -3.25, 1e9, 1e-4, 0.0005];
        for _ in 0..200_000 {
            let r = next();
            values.push((r % 10_000_000_000) as f64 / 1000.0);
            values.push((r % 1_000_000) as f64 / 1000.0 * if r & 1 == 0 { 1.0 } else { -1.0 });
            values.push(f64::from_bits(r) % 1e6);
            values.push((r >> 11) as f64 / (1u64 << 53) as f64 * 200.0);
        }
        for v in values.into_iter().filter(|v| v.is_finite()) {
            let mut ours = String::new();
            if thousandths(&mut ours, v) {
                assert_eq!(ours, ryu::Buffer::new().format_finite(v), "{v:?}");
                checked += 1;
            } else {
                assert!(ours.is_empty());
            }
        }
        assert!(checked > 400_000, "the fast path was taken {checked} times");
    }

    #[test]
    fn hex_ids() {
        let mut s = String::new();
        hex(&mut s, 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, 32);
        hex(&mut s, 0xf067aa0ba902b7, 16);
        assert_eq!(s, "4bf92f3577b34da6a3ce929d0e0e473600f067aa0ba902b7");
        // Every byte value, at every place, as `format!` writes it.
        let mut v = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128;
        for _ in 0..1000 {
            let (mut wide, mut narrow) = (String::new(), String::new());
            hex(&mut wide, v, 32);
            hex(&mut narrow, v, 16);
            assert_eq!((wide, narrow), (format!("{v:032x}"), format!("{:016x}", v as u64)));
            v = v.wrapping_mul(0x2545_f491_4f6c_dd1d_9e37_79b9_7f4a_7c15).rotate_left(17);
        }
    }

    #[test]
    fn json_strings_round_trip() {
        for s in ["plain", "q\"uo\\te", "line\nbreak\ttab\r", "\u{1}\u{1f}\u{7f}", "ünï 日本"] {
            let mut out = String::new();
            json_str(&mut out, s);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
        }
        // Every special byte at every offset of strings longer than a word, among clean bytes
        // and multi-byte characters: the eight-byte skip must never step over one.
        let specials = ['"', '\\', '\n', '\r', '\t', '\u{0}', '\u{1f}', '\u{7f}', ' ', '~', 'é', '日'];
        for len in [1, 2, 3, 7, 8, 9, 15, 16, 17, 33] {
            for at in 0..len {
                for c in specials {
                    for filler in ['a', 'ü'] {
                        let s: String = (0..len).map(|i| if i == at { c } else { filler }).collect();
                        let mut out = String::new();
                        json_str(&mut out, &s);
                        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s, "{out}");
                        // serde_json leaves DEL raw; we escape it.
                        assert_eq!(out, serde_json::to_string(&s).unwrap().replace('\u{7f}', "\\u007f"), "{s:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_word_test_matches_the_byte_test() {
        for b in 0..=255u8 {
            let special = b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f;
            for pos in 0..8 {
                let mut w = [b'a'; 8];
                w[pos] = b;
                assert_eq!(needs_escape(u64::from_le_bytes(w)), special, "byte {b:#x} at {pos}");
                let mut hi = [0xC3; 8];
                hi[pos] = b;
                assert_eq!(needs_escape(u64::from_le_bytes(hi)), special, "byte {b:#x} among high bytes");
            }
        }
    }
}
