//! Scrubbing free text: one pass over the bytes, copying only when something is replaced.

use std::borrow::Cow;

use super::keys::is_sensitive_key;

/// What replaces an email address.
pub const EMAIL: &str = "[EMAIL]";
/// What replaces a card number.
pub const CARD: &str = "[CARD]";
/// What replaces a bearer token or a JWT.
pub const TOKEN: &str = "[TOKEN]";
/// What replaces the value of a sensitive key.
pub const REDACTED: &str = "[REDACTED]";

/// The longest key looked at before a `=` or `:`.
const MAX_KEY: usize = 128;

/// `text` with personal data and secrets replaced:
///
/// - email addresses → `[EMAIL]`;
/// - card numbers (13–19 digits, optionally in groups separated by one space or dash, starting
///   with 2–6 as payment cards do, Luhn-valid) → `[CARD]`;
/// - bearer tokens and JWTs → `[TOKEN]`;
/// - the value after a sensitive key (`password=…`, `?token=…&`, `"cvv": "…"`,
///   `card_number: Some("…")`, `Authorization: Bearer …`) → `[REDACTED]`.
///
/// Borrowed when nothing was found, which is the common case and costs no allocation.
///
/// ```
/// use obs_runtime::scrub::scrub_text;
///
/// assert_eq!(
///     scrub_text("refund for ana@example.org, card 4111 1111 1111 1111, order 20261128000123"),
///     "refund for [EMAIL], card [CARD], order 20261128000123",
/// );
/// assert_eq!(scrub_text("GET /reset?token=abc123&lang=en"), "GET /reset?token=[REDACTED]&lang=en");
/// assert_eq!(scrub_text(r#"{"user_password":"hunter2","user_id":42}"#), r#"{"user_password":"[REDACTED]","user_id":42}"#);
/// assert!(matches!(scrub_text("nothing to see"), std::borrow::Cow::Borrowed(_)));
/// ```
pub fn scrub_text(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    let mut out = Out { src: text, buf: None, copied: 0 };
    let mut i = 0;
    // Where the base64url run of the last `eyJ` that was no JWT ends: no `eyJ` inside it can be
    // one either (they reach the same end), so `eyJeyJeyJ…` stays linear.
    let mut no_jwt_before = 0;
    while i < b.len() {
        let c = b[i];
        if !TRIGGER[c as usize] {
            i += 1;
            continue;
        }
        let next = match c {
            b'@' => email_at(b, i, 1, out.copied).map(|(s, e)| {
                out.replace(s, e, EMAIL);
                e
            }),
            // `%40`, a percent-encoded `@`: an address in a URL's query or path.
            b'%' if b.get(i + 1..i + 3) == Some(b"40") => email_at(b, i, 3, out.copied).map(|(s, e)| {
                out.replace(s, e, EMAIL);
                e
            }),
            b'0'..=b'9' if i == 0 || !b[i - 1].is_ascii_digit() => Some(digits_at(b, i, &mut out)),
            b'e' if i >= no_jwt_before => match jwt_at(b, i) {
                Ok(e) => {
                    out.replace(i, e, TOKEN);
                    Some(e)
                }
                Err(run_end) => {
                    no_jwt_before = run_end;
                    None
                }
            },
            b'b' | b'B' => bearer_at(b, i).map(|(s, e)| {
                out.replace(s, e, TOKEN);
                e
            }),
            b'=' | b':' => value_of_sensitive_key(b, i).or_else(|| url_password(b, i)).map(|(s, e)| {
                out.replace(s, e, REDACTED);
                e
            }),
            _ => None,
        };
        i = next.unwrap_or(i + 1).max(i + 1);
    }
    out.finish()
}

/// Bytes that may start something to scrub.
static TRIGGER: [bool; 256] = {
    let mut t = [false; 256];
    let mut d = b'0';
    while d <= b'9' {
        t[d as usize] = true;
        d += 1;
    }
    t[b'@' as usize] = true;
    t[b'%' as usize] = true;
    t[b'e' as usize] = true;
    t[b'b' as usize] = true;
    t[b'B' as usize] = true;
    t[b'=' as usize] = true;
    t[b':' as usize] = true;
    t
};

/// The scrubbed copy, made only once something is replaced.
struct Out<'a> {
    src: &'a str,
    buf: Option<String>,
    copied: usize,
}

impl Out<'_> {
    /// Replaces `start..end` (both at ASCII bytes, so at char boundaries); a part already
    /// replaced is not replaced twice.
    fn replace(&mut self, start: usize, end: usize, with: &str) {
        let start = start.max(self.copied);
        if end <= start {
            return;
        }
        let buf = self.buf.get_or_insert_with(|| String::with_capacity(self.src.len()));
        buf.push_str(&self.src[self.copied..start]);
        buf.push_str(with);
        self.copied = end;
    }
}

impl<'a> Out<'a> {
    fn finish(self) -> Cow<'a, str> {
        match self.buf {
            None => Cow::Borrowed(self.src),
            Some(mut buf) => {
                buf.push_str(&self.src[self.copied..]);
                Cow::Owned(buf)
            }
        }
    }
}

/// A byte of an address's local part: ASCII ones, and any byte of a non-ASCII character
/// (`andré@…`; the scan still stops only at ASCII bytes, so never inside a character).
fn is_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c >= 0x80 || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// An email address around the `@` (`at_len` 1) or `%40` (`at_len` 3) at `at`: `(start, end)`.
fn email_at(b: &[u8], at: usize, at_len: usize, floor: usize) -> Option<(usize, usize)> {
    let mut s = at;
    // No length cap: a cap would cut inside a run of digits and letters, and a second pass
    // would see other groups there. Linear anyway: `@` is not a local-part character.
    while s > floor && is_local(b[s - 1]) {
        s -= 1;
    }
    if s == at {
        return None;
    }
    let mut e = at + at_len;
    while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] >= 0x80 || b[e] == b'-' || b[e] == b'.') {
        e += 1;
    }
    // The domain ends after the last label (not the first) that starts with two letters, at the
    // end of those letters: `b.io4111…` ends after `io`, `x.io.4111…` after `io`. An empty label
    // ends the domain. Where it ends then does not depend on what follows, so a second pass
    // (after what follows was replaced) finds the same address.
    let domain = &b[at + at_len..e];
    let mut end = None;
    let mut offset = 0;
    for (k, label) in domain.split(|&c| c == b'.').enumerate() {
        if label.is_empty() {
            break;
        }
        // Letters, ASCII or not (`münchen.de`, `пример.рф`): a run of non-ASCII bytes ends at an
        // ASCII byte, so the end stays on a character boundary.
        let letters = label.iter().take_while(|c| c.is_ascii_alphabetic() || **c >= 0x80).count();
        if k >= 1 && letters >= 2 {
            end = Some(at + at_len + offset + letters);
        }
        offset += label.len() + 1;
    }
    end.map(|end| (s, end))
}

/// The digits starting at `start`: replaces the card numbers among them; returns where they end.
///
/// A run is digit groups joined by single spaces or dashes, however many: cutting it anywhere
/// would make a second pass over the output see other groups, and find other cards.
fn digits_at(b: &[u8], start: usize, out: &mut Out<'_>) -> usize {
    // The end of the group starting at `i`, and where the next group starts, if any.
    let group = |i: usize| {
        let e = run(b, i, |c| c.is_ascii_digit());
        let next = (e + 1 < b.len() && matches!(b[e], b' ' | b'-') && b[e + 1].is_ascii_digit()).then_some(e + 1);
        (e, next)
    };
    // Most runs are short: count first, allocate only for a run long enough to hold a card.
    let (mut total, mut i) = (0, start);
    let end = loop {
        let (e, next) = group(i);
        total += e - i;
        match next {
            Some(n) => i = n,
            None => break e,
        }
    };
    if total < 13 {
        return end;
    }
    let mut groups = Vec::new();
    let mut i = Some(start);
    while let Some(s) = i {
        let (e, next) = group(s);
        groups.push((s, e));
        i = next;
    }
    let mut g = 0;
    while g < groups.len() {
        let mut digits = 0;
        let mut best = None;
        for (h, &(s, e)) in groups.iter().enumerate().skip(g) {
            digits += e - s;
            if digits > 19 {
                break;
            }
            if digits >= 13 && matches!(b[groups[g].0], b'2'..=b'6') && luhn(&groups[g..=h], b) {
                best = Some(h);
            }
        }
        match best {
            Some(h) => {
                out.replace(groups[g].0, groups[h].1, CARD);
                g = h + 1;
            }
            None => g += 1,
        }
    }
    end
}

/// Whether an integer is a card number (13–19 digits, starting with 2–6, Luhn-valid): an
/// integer field holding one is scrubbed like the same digits in text.
pub(crate) fn is_card_number(n: u128) -> bool {
    if !(1_000_000_000_000..10_000_000_000_000_000_000).contains(&n) {
        return false;
    }
    let digits = n.to_string();
    matches!(digits.as_bytes()[0], b'2'..=b'6') && luhn(&[(0, digits.len())], digits.as_bytes())
}

/// The Luhn checksum over the digits of `groups`.
fn luhn(groups: &[(usize, usize)], b: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    for &(s, e) in groups.iter().rev() {
        for &c in b[s..e].iter().rev() {
            let mut d = (c - b'0') as u32;
            if double {
                d *= 2;
                if d > 9 {
                    d -= 9;
                }
            }
            sum += d;
            double = !double;
        }
    }
    sum.is_multiple_of(10)
}

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

fn run(b: &[u8], mut i: usize, class: fn(u8) -> bool) -> usize {
    #[cfg(test)]
    let start = i;
    while i < b.len() && class(b[i]) {
        i += 1;
    }
    #[cfg(test)]
    tests::SCANNED.with(|s| s.set(s.get() + (i - start)));
    i
}

/// A JWT (`eyJ…` header, `.` payload, `.` signature) starting at `i`: where it ends; or, when
/// there is none, where the base64url run holding `i` ends.
fn jwt_at(b: &[u8], i: usize) -> Result<usize, usize> {
    // No word boundary required before it: a replacement just before (`[CARD]eyJ…`) would
    // create one, and a second pass would then find what the first did not.
    if !b[i..].starts_with(b"eyJ") {
        return Err(i + 1);
    }
    let h = run(b, i, is_b64url);
    if h - i < 10 || b.get(h) != Some(&b'.') {
        return Err(h);
    }
    let p = run(b, h + 1, is_b64url);
    if p - (h + 1) < 2 || b.get(p) != Some(&b'.') {
        return Err(h);
    }
    Ok(run(b, p + 1, is_b64url))
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

/// `Bearer <token>` starting at `i`: the token's `(start, end)`.
fn bearer_at(b: &[u8], i: usize) -> Option<(usize, usize)> {
    // No word boundary required before it, for the same reason as for JWTs.
    if b.len() < i + 7 || !b[i..i + 6].eq_ignore_ascii_case(b"bearer") || b[i + 6] != b' ' {
        return None;
    }
    let s = run(b, i + 6, |c| c == b' ');
    let e = run(b, s, is_token_char);
    (e - s >= 8).then_some((s, e))
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')
}

/// The value after the `=` or `:` at `sep` when the key before it is sensitive: `(start, end)`.
///
/// Long on purpose: a scan backwards over the key's quoting, then forwards over the value's,
/// whose shapes (quoted, escaped quotes, bare) mirror each other; the positions it moves are
/// the whole state, and the fuzz target and property tests cover it as one piece.
fn value_of_sensitive_key(b: &[u8], sep: usize) -> Option<(usize, usize)> {
    // The key: `key=`, `key = `, `"key":`, `'key':`, `\"key\":`.
    let mut k_end = sep;
    while k_end > 0 && matches!(b[k_end - 1], b' ' | b'\t') {
        k_end -= 1;
    }
    let quoted = k_end > 0 && matches!(b[k_end - 1], b'"' | b'\'');
    if quoted {
        k_end -= 1;
        if k_end > 0 && b[k_end - 1] == b'\\' {
            k_end -= 1;
        }
    }
    let mut k_start = k_end;
    while k_start > 0 && k_end - k_start < MAX_KEY && is_key_char(b[k_start - 1]) {
        k_start -= 1;
    }
    if k_start == k_end {
        return None;
    }
    // Both ends are at ASCII bytes, so this never fails.
    let key = std::str::from_utf8(&b[k_start..k_end]).ok()?;
    if !is_sensitive_key(key) {
        return None;
    }
    // `key => value` (Perl, PHP, Ruby hashes).
    let after = if b[sep] == b'=' && b.get(sep + 1) == Some(&b'>') { sep + 2 } else { sep + 1 };
    let mut v = run(b, after, |c| c == b' ' || c == b'\t');
    if b[v..].starts_with(b"Some(") {
        v += 5;
    }
    if v >= b.len() {
        return None;
    }
    // A cookie header's value is all its pairs (`Cookie: theme=dark; sid=…`), up to the line's end.
    // (By the key's end, as `Set-Cookie` and `Cookie` do: what comes before the key may have been
    // replaced by a second pass, so the rule must not depend on it.)
    // A quoted value is taken as any other quoted value, below.
    if key.len() >= 6
        && key.as_bytes()[key.len() - 6..].eq_ignore_ascii_case(b"cookie")
        && !matches!(b[v], b'"' | b'\'')
        && !(b[v] == b'\\' && b.get(v + 1) == Some(&b'"'))
    {
        let e = run(b, v, |c| !matches!(c, b'\r' | b'\n' | b'"' | b'\''));
        return (e > v).then_some((v, e));
    }
    match b[v] {
        q @ (b'"' | b'\'') => {
            // Up to the closing quote that is not escaped (or the end).
            let mut e = v + 1;
            while e < b.len() && b[e] != q {
                e += if b[e] == b'\\' { 2 } else { 1 };
            }
            Some((v + 1, e.min(b.len())))
        }
        b'\\' if b.get(v + 1) == Some(&b'"') => {
            let e = b[v + 2..].windows(2).position(|w| w == b"\\\"").map_or(b.len(), |p| v + 2 + p);
            Some((v + 2, e))
        }
        open @ (b'{' | b'[') => Some((v, matching(b, v, open))),
        _ => {
            // A value wrapped in a type (`Password("…")`, `Masked { inner: "…" }`,
            // `Some(Some("…"))`): the whole of it, brackets included.
            let mut id = run(b, v, |c| c.is_ascii_alphanumeric() || c == b'_' || c == b':');
            // A type's name starts with a capital, after its path (`secrecy::SecretBox`).
            let name = b[v..id].iter().rposition(|&c| c == b':').map_or(v, |p| v + p + 1);
            let type_name = name < id && b[name].is_ascii_uppercase();
            if b.get(id) == Some(&b'<') {
                // Type parameters (`SecretBox<str>(…)`), looked at over a bounded length.
                let mut depth = 0usize;
                for (k, &c) in b[id..b.len().min(id + MAX_KEY)].iter().enumerate() {
                    match c {
                        b'<' => depth += 1,
                        b'>' => depth -= 1,
                        b'\n' | b'"' => break,
                        _ => {}
                    }
                    if depth == 0 {
                        id += k + 1;
                        break;
                    }
                }
            }
            if type_name {
                match (b.get(id), b.get(id + 1)) {
                    (Some(b'('), _) => return Some((v, matching(b, id, b'('))),
                    (Some(b'{'), _) => return Some((v, matching(b, id, b'{'))),
                    (Some(b' '), Some(b'{')) => return Some((v, matching(b, id + 1, b'{'))),
                    _ => {}
                }
            }
            let mut e = run(b, v, |c| {
                !matches!(
                    c,
                    b' ' | b'\t' | b'\r' | b'\n' | b',' | b';' | b'&' | b'}' | b']' | b')' | b'"' | b'\'' | b'<' | b'>'
                )
            });
            // `Authorization: Bearer abc…`: the scheme and its credentials.
            let word = &b[v..e];
            let scheme = [&b"bearer"[..], b"basic", b"digest", b"token", b"negotiate"];
            if scheme.iter().any(|s| word.eq_ignore_ascii_case(s)) && b.get(e) == Some(&b' ') {
                e = run(b, run(b, e, |c| c == b' '), is_token_char);
            }
            (e > v).then_some((v, e))
        }
    }
}

/// The password of a URL's user information (`postgres://app:hunter2@db`, `redis://:pw@cache`)
/// when `colon` is the `:` before it: `(start, end)`.
fn url_password(b: &[u8], colon: usize) -> Option<(usize, usize)> {
    if b[colon] != b':' {
        return None;
    }
    // Neither part holds a `:` here, so each byte is looked at from one colon only: linear. Nor
    // a bracket: a replacement (`[EMAIL]`, `[CARD]`) breaks a part, so a second pass over the
    // output never finds a password the first did not.
    fn userinfo(c: u8) -> bool {
        !matches!(c, b'@' | b'/' | b':' | b' ' | b'\t' | b'\r' | b'\n' | b'"' | b'\'' | b'<' | b'>' | b'[' | b']')
    }
    // Up to the last `@` before the host (`p@ss@db`: a hand-written password with an `@`).
    let run_end = run(b, colon + 1, |c| c == b'@' || userinfo(c));
    let end = colon + 1 + b[colon + 1..run_end].iter().rposition(|&c| c == b'@')?;
    if end == colon + 1 {
        return None;
    }
    let mut user = colon;
    while user > 0 && userinfo(b[user - 1]) {
        user -= 1;
    }
    (user >= 3 && &b[user - 3..user] == b"://").then_some((colon + 1, end))
}

/// The end (exclusive) of the bracketed value opening at `open_at`; the end of the text if it is
/// not closed.
fn matching(b: &[u8], open_at: usize, open: u8) -> usize {
    let close = match open {
        b'{' => b'}',
        b'(' => b')',
        _ => b']',
    };
    let mut depth = 0usize;
    let mut i = open_at;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
        } else if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return i + 1;
            }
        }
        i += 1;
    }
    b.len()
}

/// `%XX` sequences decoded, invalid UTF-8 replaced, a `%` without two hex digits kept: a
/// request's path, and the W3C baggage octet form of `OTEL_RESOURCE_ATTRIBUTES` and the OTLP
/// header variables. (Here because the scanner above reads `%40` too.)
pub(crate) fn percent_decode(text: &str) -> String {
    if !text.contains('%') {
        return text.to_owned();
    }
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> String {
        scrub_text(t).into_owned()
    }

    #[test]
    fn emails() {
        assert_eq!(s("ana@example.org"), "[EMAIL]");
        assert_eq!(s("to: Ana.Lopez+tickets@mail.example.co.uk."), "to: [EMAIL].");
        assert_eq!(s("<ana@example.org>, bob@x.io"), "<[EMAIL]>, [EMAIL]");
        // Found by the fuzzer: digits glued to the domain are not part of it.
        assert_eq!(s("a@b.cd4111111111111111"), "[EMAIL][CARD]");
        assert_eq!(s("q@D.iu.55555555555555552-57"), "[EMAIL].[CARD]-57");
        assert_eq!(s("a@b.cd..ef"), "[EMAIL]..ef");
        // Found by the fuzzer: the local part is not cut inside a run of digit groups.
        let glued = "66633333332-66666666666-".repeat(4) + "666o@-s.satoken.";
        let once = s(&glued);
        assert_eq!(s(&once), once);
        // Addresses with non-ASCII characters (the review found them leaking whole).
        assert_eq!(
            s("from andré@example.fr and info@münchen.de, почта@пример.рф"),
            "from [EMAIL] and [EMAIL], [EMAIL]"
        );
        // Percent-encoded, in a URL (a library's error message quoting the request's URL).
        assert_eq!(
            s("error sending request for url (http://h:1/pay?customer=ana%40example.org&n=2)"),
            "error sending request for url (http://h:1/pay?customer=[EMAIL]&n=2)"
        );
        assert_eq!(s("/users/a.b%2Bc%40mail.example.co.uk/x"), "/users/[EMAIL]/x");
        for kept in
            ["@handle", "user@localhost", "a@b", "price @ 5.00", "x@1.2.3.4", "j._@..ncy", "a@.b.cd", "50%40", "a%40b"]
        {
            assert_eq!(s(kept), kept);
        }
    }

    #[test]
    fn cards() {
        for card in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5500 0055 5555 5559",
            "378282246310005",
            "3782-822463-10005",
            "6011111111111117",
            "4222222222222",
        ] {
            assert_eq!(s(card), "[CARD]", "{card}");
            assert_eq!(s(&format!("card:{card}, exp 12/29")), "card:[CARD], exp 12/29", "{card}");
        }
        for kept in [
            "4111111111111112",           // Luhn fails
            "1732826362000",              // a millisecond timestamp (Luhn-valid, but no card starts with 1)
            "41111111111111110000",       // 20 digits
            "2026-11-28 20:39:22",        // a date
            "+1 555 123 4567",            // a phone number
            "order 20261128000123",       // an order number
            "0000000000000000",           // not a card prefix
            "41111111111111111111111111", // a long id containing a card-shaped run
        ] {
            assert_eq!(s(kept), kept);
        }
        // Next to letters, still a card.
        assert_eq!(s("x4111111111111111y"), "x[CARD]y");
        assert!(is_card_number(4111111111111111) && is_card_number(378282246310005));
        assert!(!is_card_number(4111111111111112) && !is_card_number(1732826362000) && !is_card_number(42));
    }

    #[test]
    fn tokens() {
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(s(jwt), "[TOKEN]");
        assert_eq!(s(&format!("jwt={jwt} ok")), "jwt=[REDACTED] ok");
        assert_eq!(s(&format!("got {jwt}.")), "got [TOKEN].");
        assert_eq!(s("Authorization: Bearer abc.DEF-123_456"), "Authorization: [REDACTED]");
        assert_eq!(s("sent bearer abc.DEF-123_456 upstream"), "sent bearer [TOKEN] upstream");
        assert_eq!(s("bearer short"), "bearer short");
        // Found by the fuzzer: glued to what precedes it, still a token.
        assert_eq!(s("4111111111111111beaRer abcdefgh12"), "[CARD]beaRer [TOKEN]");
        assert_eq!(s(&format!("x{jwt}")), "x[TOKEN]");
    }

    #[test]
    fn sensitive_keys_in_text() {
        assert_eq!(s("GET /reset?token=abc123&lang=en"), "GET /reset?token=[REDACTED]&lang=en");
        assert_eq!(
            s("https://x.io/cb?api_key=k1&password=p w"),
            "https://x.io/cb?api_key=[REDACTED]&password=[REDACTED] w"
        );
        assert_eq!(s(r#"{"user":{"Password":"p\"w","id":1}}"#), r#"{"user":{"Password":"[REDACTED]","id":1}}"#);
        assert_eq!(
            s(r#"{"card": {"cvv": 123}, "cardNumber": [4,1]}"#),
            r#"{"card": {"cvv": [REDACTED]}, "cardNumber": [REDACTED]}"#
        );
        assert_eq!(
            s(r#"Form { new_password: "x", name: "Ana" }"#),
            r#"Form { new_password: "[REDACTED]", name: "Ana" }"#
        );
        assert_eq!(s(r#"Form { card_cvc: Some("123") }"#), r#"Form { card_cvc: Some("[REDACTED]") }"#);
        assert_eq!(s(r#"{\"password\":\"hunter2\"}"#), r#"{\"password\":\"[REDACTED]\"}"#);
        assert_eq!(s("user_password = hunter2"), "user_password = [REDACTED]");
        assert_eq!(s("password:"), "password:");
        // Values wrapped in a type, as `Debug` writes them (the review found the inner value
        // kept), after a tab, after `=>`; every pair of a cookie header.
        assert_eq!(s(r#"Login { password: Password("hunter2"), user: 7 }"#), "Login { password: [REDACTED], user: 7 }");
        assert_eq!(s(r#"Login { pin: Some(Some("1234")) }"#), "Login { pin: Some([REDACTED]) }");
        assert_eq!(
            s(r#"Login { password: Masked { inner: "x" }, ok: true }"#),
            "Login { password: [REDACTED], ok: true }"
        );
        assert_eq!(s(r#"secret: secrecy::SecretBox<str>("x"), n: 1"#), "secret: [REDACTED], n: 1");
        assert_eq!(s(r#"token: Wrapper<Vec<u8>> { 0: [1] }"#), "token: [REDACTED]");
        assert_eq!(s("password=\thunter2 next"), "password=\t[REDACTED] next");
        assert_eq!(s("{'password' => 'hunter2'}"), "{'password' => '[REDACTED]'}");
        assert_eq!(s("Cookie: theme=dark; sid=abc123\r\nHost: x"), "Cookie: [REDACTED]\r\nHost: x");
        // Quoted, as `HeaderMap`'s `Debug` writes it (the review found the first cookie rule let it through).
        assert_eq!(
            s(r#"{"host": "x", "cookie": "theme=dark; session=abc123"}"#),
            r#"{"host": "x", "cookie": "[REDACTED]"}"#
        );
        assert_eq!(s(r#"Headers { cookie: Some("sid=abc") }"#), r#"Headers { cookie: Some("[REDACTED]") }"#);
        assert_eq!(s("password\t= hunter2"), "password\t= [REDACTED]");
        // A URL's password, whatever the host (the email rule caught it only by chance).
        assert_eq!(s("postgres://app:hunter2@db:5432/app"), "postgres://app:[REDACTED]@db:5432/app");
        assert_eq!(s("redis://:hunter2@10.0.0.5:6379"), "redis://:[REDACTED]@10.0.0.5:6379");
        assert_eq!(s("amqp://u:p4ss@mq.example.org/vh"), "amqp://u:[REDACTED]@mq.example.org/vh");
        assert_eq!(s("postgres://u:p@ss@db/x"), "postgres://u:[REDACTED]@db/x");
        // Ids and ordinary keys are left alone.
        for kept in [
            "user_id=4111111111111112",
            "time 12:30:01",
            "ratio=0.5",
            "http://x.io:8080/a",
            "at 12:30@home",
            "ssh git@host:repo",
            "password: hunter2 (rotated)",
        ] {
            assert_eq!(s(kept), kept.replace("hunter2", "[REDACTED]"));
        }
    }

    #[test]
    fn idempotent_on_text_made_of_what_the_scrubber_reacts_to() {
        const PIECES: &[&str] = &[
            "password",
            "Secret",
            "cookie",
            "Some(",
            "::",
            ":",
            "=",
            "=>",
            "(",
            ")",
            "{",
            "}",
            "<",
            ">",
            "[",
            "]",
            "\"",
            "'",
            "@",
            "://",
            " ",
            "\t",
            "\n",
            ";",
            "x",
            "Ab",
            "4111111111111111",
            "a@b.io",
            "Bearer ",
            "eyJhbGciOiJI.eyJ.sig",
            "\\",
        ];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..50_000 {
            let n = (next() % 20) as usize;
            let text: String = (0..n).map(|_| PIECES[(next() % PIECES.len() as u64) as usize]).collect();
            let once = s(&text);
            assert_eq!(s(&once), once, "from {text:?}");
        }
    }

    #[test]
    fn idempotent_and_borrowed_when_clean() {
        for t in ["password=[REDACTED]", "[EMAIL] [CARD] [TOKEN]", r#"{"cvv":"[REDACTED]"}"#] {
            assert_eq!(s(t), t);
        }
        assert!(matches!(scrub_text("plain text, 12 digits 123456789012"), Cow::Borrowed(_)));
        // Found by the fuzzer: a key glued to a card number is still a key on the first pass.
        let t = "bn\u{1}6186662-6666666666-666pin= 1bin= 1bn= 1\0pin= 11\0pin= b$,6\0s6n6";
        let once = s(t);
        assert_eq!(s(&once), once);
        assert_eq!(s("4111111111111111pin=1234"), "[CARD]pin=[REDACTED]");
        // Found by the fuzzer: a long run of digit groups is one run, whatever its length.
        let groups = "6666666666-66633333332-66666666666-".repeat(12) + "4111-1111-1111-1111-666";
        let once = s(&groups);
        assert!(once.contains("[CARD]"));
        assert_eq!(s(&once), once);
    }

    thread_local! {
        /// Bytes the scanning loops stepped over (counted in `run`).
        pub(super) static SCANNED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn linear_on_adversarial_input() {
        // The review found `eyJeyJeyJ…` rescanned from every `e`: quadratic.
        for t in [
            "eyJ".repeat(20_000),
            "eyJ".repeat(10_000) + ".",
            "eyJhbGciOiJIUzI1NiJ9.".repeat(5_000),
            "bearer bearer ".repeat(5_000),
            "a@".repeat(20_000),
            "password=".repeat(10_000),
        ] {
            SCANNED.with(|c| c.set(0));
            let _ = s(&t);
            let scanned = SCANNED.with(|c| c.get());
            assert!(scanned <= 4 * t.len(), "{scanned} bytes scanned for {} bytes of {:?}…", t.len(), &t[..12]);
        }
    }

    #[test]
    fn never_splits_characters() {
        for t in
            ["é@é.fr", "ñ4111111111111111ñ", "password=日本語 ok", "\"password\":\"日\\", "password:\"\\", "ünïcödé"]
        {
            let _ = s(t);
        }
    }
}
