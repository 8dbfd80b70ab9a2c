//! Series keys: label values, each followed by [`SEP`], built on the stack a machine word at a
//! time.
//!
//! A key is a byte string, but it is accumulated in a register and stored in whole `u64` words.
//! Reading back bytes that were just written in smaller pieces stalls the CPU (a failed
//! store-to-load forward), and this runs on every call whose labels come from arguments; whole
//! words forward, so hashing and comparing the words is cheap. Integers are turned into digits inside a register (SWAR) for the same
//! reason. The byte string, and so the series, does not depend on how it was pushed: `5u64` and
//! `"5"` are the same label value.

use std::mem::MaybeUninit;

use super::family::SEP;

const WORDS: usize = 24;
const MIX: u64 = 0xf135_7aea_2e62_a9c5;

/// A per-process random start for key hashes, so that label values an outsider chooses (a path,
/// a header) cannot be prepared to pile up in one part of a family's table.
#[inline(always)]
fn seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        use std::hash::BuildHasher as _;
        std::collections::hash_map::RandomState::new().hash_one(0x6f62_735f_6b65_7973_u64)
    })
}

#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    (h.rotate_left(26) ^ w).wrapping_mul(MIX)
}

/// The hash of a call site's raw integer label values (`__private::Site::raw_series`), seeded
/// as series keys are.
#[inline(always)]
pub(crate) fn hash_raw(raws: [u64; 4]) -> u64 {
    mix(mix(mix(mix(seed(), raws[0]), raws[1]), raws[2]), raws[3])
}

/// Builds a series key without allocating (up to 192 bytes) and without zeroing its buffer.
pub struct KeyBuf {
    /// The first `n` are initialised (unless `heap` took over).
    words: [MaybeUninit<u64>; WORDS],
    n: usize,
    /// The word being filled: its low `cur_len` bytes; the others are zero.
    cur: u64,
    cur_len: u32,
    /// All completed words once there are more than `WORDS`; empty before.
    heap: Vec<u64>,
}

/// A finished key, borrowed from its [`KeyBuf`]: `hash`, then the words of the byte string (the
/// last one zero-padded), then the byte length.
#[derive(Clone, Copy)]
pub struct KeyView<'a> {
    pub(crate) hash: u64,
    pub(crate) full: &'a [u64],
    pub(crate) tail: Option<u64>,
    pub(crate) len: usize,
}

impl KeyView<'_> {
    /// Whether `words` (as stored in a series) spell this key.
    #[inline(always)]
    pub(crate) fn matches(&self, words: &[u64]) -> bool {
        let n = self.full.len();
        if words.len() != n + self.tail.is_some() as usize {
            return false;
        }
        for (a, b) in words[..n].iter().zip(self.full) {
            if a != b {
                return false;
            }
        }
        match self.tail {
            Some(t) => words[n] == t,
            None => true,
        }
    }

    /// The words, owned.
    pub(crate) fn to_words(self) -> Box<[u64]> {
        self.full.iter().copied().chain(self.tail).collect()
    }

    /// The byte string.
    pub(crate) fn to_bytes(self) -> Vec<u8> {
        let mut b: Vec<u8> = self.full.iter().chain(self.tail.as_ref()).flat_map(|w| w.to_le_bytes()).collect();
        b.truncate(self.len);
        b
    }
}

impl Default for KeyBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyBuf {
    /// An empty key.
    #[inline(always)]
    pub fn new() -> KeyBuf {
        KeyBuf { words: [MaybeUninit::uninit(); WORDS], n: 0, cur: 0, cur_len: 0, heap: Vec::new() }
    }

    #[inline(always)]
    fn store(&mut self, w: u64) {
        if self.n < WORDS {
            self.words[self.n].write(w);
        } else {
            spill(&mut self.heap, &self.words, w);
        }
        self.n += 1;
    }

    /// Appends the low `k` bytes of `w` (`k <= 8`; the bytes above `k` must be zero).
    #[inline(always)]
    fn push_word(&mut self, w: u64, k: u32) {
        debug_assert!(k <= 8 && (k == 8 || w >> (8 * k) == 0));
        let free = 8 - self.cur_len;
        if k < free {
            self.cur |= w << (8 * self.cur_len);
            self.cur_len += k;
        } else {
            let full = self.cur | (w << (8 * self.cur_len));
            self.store(full);
            // `free == 8` means `cur` was empty and `w` filled a word exactly.
            self.cur = if free == 8 { 0 } else { w >> (8 * free) };
            self.cur_len = k - free;
        }
    }

    /// Appends raw bytes (part of a label value).
    #[inline(always)]
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.push_word(u64::from_le_bytes(c.try_into().expect("8 bytes")), 8);
        }
        let rest = chunks.remainder();
        let k = rest.len();
        if k > 0 {
            self.push_word(load_short(rest), k as u32);
        }
    }

    /// Ends the current label value.
    #[inline(always)]
    pub fn end_value(&mut self) {
        self.push_word(SEP as u64, 1);
    }

    /// Appends a whole label value.
    #[inline(always)]
    pub fn push_str(&mut self, value: &str) {
        self.push_bytes(value.as_bytes());
        self.end_value();
    }

    /// Appends an unsigned integer label value, in decimal.
    #[inline(always)]
    pub fn push_u64(&mut self, v: u64) {
        const E8: u64 = 100_000_000;
        if v < 10 {
            // Digit and separator in one push: small values (tiers, flags) are common.
            self.push_word((b'0' as u64 + v) | ((SEP as u64) << 8), 2);
        } else if v < E8 {
            let n = (v as u32).ilog10() + 1;
            // n <= 8 digits and the separator: at most 9 bytes, so split when n == 8.
            if n < 8 {
                self.push_word((digits8(v as u32) >> (8 * (8 - n))) | ((SEP as u64) << (8 * n)), n + 1);
            } else {
                self.push_word(digits8(v as u32), 8);
                self.end_value();
            }
        } else if v < E8 * E8 {
            self.push_digits_trimmed((v / E8) as u32);
            self.push_word(digits8((v % E8) as u32), 8);
            self.end_value();
        } else {
            self.push_digits_trimmed((v / (E8 * E8)) as u32);
            self.push_word(digits8((v / E8 % E8) as u32), 8);
            self.push_word(digits8((v % E8) as u32), 8);
            self.end_value();
        }
    }

    /// Appends a signed integer label value, in decimal.
    #[inline(always)]
    pub fn push_i64(&mut self, v: i64) {
        if v < 0 {
            self.push_word(b'-' as u64, 1);
        }
        // `push_u64` ends the value.
        self.push_u64(v.unsigned_abs());
    }

    /// `v < 10^8` in decimal without leading zeros.
    #[inline(always)]
    fn push_digits_trimmed(&mut self, v: u32) {
        let n = v.checked_ilog10().unwrap_or(0) + 1;
        self.push_word(digits8(v) >> (8 * (8 - n)), n);
    }

    /// Appends a label value formatted with `Display`.
    pub fn push_display<T: std::fmt::Display + ?Sized>(&mut self, v: &T) {
        use std::fmt::Write as _;
        struct W<'a>(&'a mut KeyBuf);
        impl std::fmt::Write for W<'_> {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                self.0.push_bytes(s.as_bytes());
                Ok(())
            }
        }
        // Writing to a KeyBuf never fails; a failing `Display` impl leaves what it wrote.
        let _ = write!(W(self), "{v}");
        self.end_value();
    }

    /// Length of the key so far, in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.n * 8 + self.cur_len as usize
    }

    /// Whether the key is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The completed words, and the partial last one.
    #[inline(always)]
    fn parts(&self) -> (&[u64], Option<u64>) {
        let full: &[u64] = if self.n <= WORDS {
            // SAFETY: the first `n` words are initialised.
            unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u64>(), self.n) }
        } else {
            &self.heap
        };
        (full, (self.cur_len > 0).then_some(self.cur))
    }

    /// The finished key.
    #[inline(always)]
    pub fn view(&self) -> KeyView<'_> {
        let (full, tail) = self.parts();
        // Words were stored whole, so reading them back forwards from the store buffer.
        let mut hash = seed();
        for &w in full {
            hash = mix(hash, w);
        }
        if let Some(t) = tail {
            hash = mix(hash, t);
        }
        KeyView { hash: mix(hash, self.len() as u64), full, tail, len: self.len() }
    }

    /// The key's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.view().to_bytes()
    }

    /// Inserts one more label value at byte offset `at` (a value boundary obtained from
    /// [`len`](Self::len)). In place when `at` is the end (the usual case: `status` last);
    /// otherwise the key is rebuilt, allocating only for keys past 192 bytes.
    #[inline]
    pub fn insert_value(&mut self, at: usize, value: &str) {
        if at == self.len() {
            self.push_str(value);
        } else {
            self.insert_value_slow(at, value);
        }
    }

    #[cold]
    fn insert_value_slow(&mut self, at: usize, value: &str) {
        let mut out = KeyBuf::new();
        self.copy_range(0, at, &mut out);
        out.push_str(value);
        self.copy_range(at, self.len(), &mut out);
        *self = out;
    }

    /// Pushes bytes `from..to` of this key onto `out`.
    #[inline(always)]
    fn copy_range(&self, from: usize, to: usize, out: &mut KeyBuf) {
        let (full, tail) = self.parts();
        for (i, w) in full.iter().chain(tail.as_ref()).enumerate() {
            let (lo, hi) = (i * 8, i * 8 + 8);
            let (a, b) = (from.max(lo), to.min(hi));
            if a < b {
                out.push_bytes(&w.to_le_bytes()[a - lo..b - lo]);
            }
        }
    }
}

/// Moves to the heap past `WORDS` words. Takes the fields, not `&mut KeyBuf`, so that the
/// scalar fields can live in registers on the hot path.
#[cold]
#[inline(never)]
fn spill(heap: &mut Vec<u64>, words: &[MaybeUninit<u64>; WORDS], w: u64) {
    if heap.is_empty() {
        // SAFETY: all WORDS words are initialised once `n` reached WORDS.
        heap.extend(words.iter().map(|w| unsafe { w.assume_init() }));
    }
    heap.push(w);
}

/// 1 to 7 bytes into the low bytes of a word, with (possibly overlapping) loads inside `s`.
#[inline(always)]
fn load_short(s: &[u8]) -> u64 {
    let k = s.len();
    debug_assert!((1..8).contains(&k));
    if k >= 4 {
        let lo = u32::from_le_bytes(s[..4].try_into().expect("4 bytes")) as u64;
        let hi = u32::from_le_bytes(s[k - 4..].try_into().expect("4 bytes")) as u64;
        lo | (hi << (8 * (k - 4)))
    } else {
        // k = 1: s[0] three times; k = 2: s[0], s[1], s[1]; k = 3: s[0], s[1], s[2].
        (s[0] as u64) | ((s[k / 2] as u64) << (8 * (k / 2))) | ((s[k - 1] as u64) << (8 * (k - 1)))
    }
}

/// The 8 decimal digits of `v < 10^8` (leading zeros included) as ASCII, the most significant
/// in the lowest byte: two 4-digit lanes, then four 2-digit lanes, then eight digits, each split
/// by multiplying by a reciprocal (no lane overflows into the next).
#[inline(always)]
fn digits8(v: u32) -> u64 {
    let v = v as u64;
    // [hi4 | lo4 << 32]
    let x = (v / 10_000) | ((v % 10_000) << 32);
    // lane / 100, exact for lanes < 10^4
    let hundreds = ((x * 10_486) >> 20) & 0x0000_007F_0000_007F;
    let x = ((x - hundreds * 100) << 16) | hundreds;
    // lane / 10, exact for lanes < 100
    let tens = ((x * 103) >> 10) & 0x000F_000F_000F_000F;
    let x = ((x - tens * 10) << 8) | tens;
    x | 0x3030_3030_3030_3030
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(k: &KeyBuf) -> Vec<String> {
        let b = k.to_bytes();
        assert_eq!(b.last(), Some(&SEP));
        b[..b.len() - 1].split(|&c| c == SEP).map(|v| String::from_utf8(v.to_vec()).unwrap()).collect()
    }

    /// The same bytes give the same view (hash and words), however they were pushed.
    fn reference(values: &[String]) -> KeyBuf {
        let mut k = KeyBuf::new();
        for v in values {
            for b in v.bytes() {
                k.push_bytes(&[b]);
            }
            k.end_value();
        }
        k
    }

    fn assert_same(a: &KeyBuf, b: &KeyBuf) {
        let (x, y) = (a.view(), b.view());
        assert_eq!(x.hash, y.hash);
        assert_eq!(x.len, y.len);
        assert!(x.matches(&y.to_words()));
        assert_eq!(x.to_bytes(), y.to_bytes());
    }

    #[test]
    fn digits8_matches_display() {
        for v in (0..100_000).chain((0..100_000_000).step_by(9_973)).chain([99_999_999, 10_000_000, 9_999_999]) {
            assert_eq!(digits8(v).to_le_bytes(), format!("{v:08}").as_bytes(), "{v}");
        }
    }

    #[test]
    fn integers_match_display_and_strings() {
        let mut cases: Vec<u64> = vec![0, 7, 9, 10, 99, 100, 12345, 99_999_999, 100_000_000, u32::MAX as u64];
        cases.extend([9_999_999_999_999_999, 10_000_000_000_000_000, u64::MAX]);
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(x >> (x % 64));
        }
        let signed = [-1i64, -10, -99, -100_000_000, i64::MIN, i64::MAX];
        let mut k = KeyBuf::new();
        let mut want = Vec::new();
        for &v in &cases {
            k.push_u64(v);
            want.push(v.to_string());
        }
        for v in signed {
            k.push_i64(v);
            want.push(v.to_string());
        }
        assert!(k.n > WORDS, "long enough to spill");
        assert_eq!(values(&k), want);
        assert_same(&k, &reference(&want));
    }

    #[test]
    fn strings_of_every_short_length_and_display() {
        let text = "abcdefghijklmnopqrstuvwxyz0123456789ü✓";
        let mut k = KeyBuf::new();
        let mut want = Vec::new();
        for n in 0..=20 {
            k.push_str(&text[..n]);
            want.push(text[..n].to_owned());
        }
        k.push_display(&1.5);
        want.push("1.5".into());
        k.push_str(&text[36..]);
        want.push(text[36..].to_owned());
        assert_eq!(values(&k), want);
        assert_same(&k, &reference(&want));
    }

    #[test]
    fn insert_value_at_a_value_boundary() {
        let mut k = KeyBuf::new();
        k.push_str("x");
        let at = k.len();
        k.push_str(&"y".repeat(300));
        k.push_u64(42);
        k.insert_value(at, "mid");
        assert_eq!(values(&k), ["x", "mid", &"y".repeat(300), "42"]);
        assert_same(&k, &reference(&["x".into(), "mid".into(), "y".repeat(300), "42".into()]));
        let end = k.len();
        k.insert_value(end, "last");
        assert_eq!(values(&k), ["x", "mid", &"y".repeat(300), "42", "last"]);
        let mut empty = KeyBuf::new();
        assert_eq!(empty.view().len, 0);
        empty.insert_value(0, "");
        assert_eq!(values(&empty), [""]);
    }

    #[test]
    fn exactly_full_inline_buffer_and_one_byte_past() {
        for extra in [0usize, 1, 7, 8, 9] {
            // 191 bytes of value and its separator: exactly 24 words, then `extra` more bytes.
            let v = "v".repeat(191);
            let mut k = KeyBuf::new();
            k.push_str(&v);
            assert_eq!((k.n, k.cur_len), (WORDS, 0));
            let w = "w".repeat(extra);
            if extra > 0 {
                k.push_str(&w[..extra - 1]);
            }
            let mut want = vec![v.clone()];
            if extra > 0 {
                want.push(w[..extra - 1].to_owned());
            }
            assert_eq!(values(&k), want, "extra {extra}");
            assert_same(&k, &reference(&want));
            k.insert_value(192, "i");
            assert_eq!(
                values(&k),
                [&v, "i"].into_iter().chain(want[1..].iter().map(String::as_str)).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn different_keys_differ() {
        let mut a = KeyBuf::new();
        a.push_str("ab");
        a.push_str("c");
        let mut b = KeyBuf::new();
        b.push_str("a");
        b.push_str("bc");
        assert!(!a.view().matches(&b.view().to_words()));
    }
}
