//! Series keys: label values, each followed by [`SEP`], built on the stack.

use std::mem::MaybeUninit;

use super::family::SEP;

const INLINE: usize = 192;
/// The most bytes a `u64`/`i64` value takes, its separator included.
const INT_MAX: usize = 21;

/// Builds a series key without allocating for keys up to 192 bytes, and without zeroing its
/// buffer: this is on the path of every call whose labels come from arguments.
pub struct KeyBuf {
    /// Initialised bytes of `inline`, unless `heap` is in use.
    len: usize,
    inline: [MaybeUninit<u8>; INLINE],
    /// Longer keys move here; empty until then.
    heap: Vec<u8>,
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
        KeyBuf { len: 0, inline: [MaybeUninit::uninit(); INLINE], heap: Vec::new() }
    }

    #[inline(always)]
    fn spilled(&self) -> bool {
        !self.heap.is_empty()
    }

    /// Appends a whole label value (`value` must not contain `0xFF`, which no `str` does).
    #[inline(always)]
    pub fn push_str(&mut self, value: &str) {
        self.push_value(value.as_bytes())
    }

    #[inline(always)]
    fn push_value(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        if !self.spilled() && self.len + n < INLINE {
            // SAFETY: `len + n + 1 <= INLINE`, checked above; the source is a valid slice.
            unsafe {
                let dst = self.inline.as_mut_ptr().cast::<u8>().add(self.len);
                copy(bytes, dst);
                dst.add(n).write(SEP);
            }
            self.len += n + 1;
        } else {
            self.spill();
            self.heap.extend_from_slice(bytes);
            self.heap.push(SEP);
        }
    }

    #[cold]
    fn spill(&mut self) {
        // Every caller pushes at least one byte right after, so `heap` is non-empty (and
        // `spilled()` true) from then on.
        if !self.spilled() {
            let mut heap = Vec::with_capacity(INLINE * 2);
            heap.extend_from_slice(self.inline_bytes());
            self.heap = heap;
        }
    }

    /// Appends an unsigned integer label value in decimal, without `fmt`.
    #[inline(always)]
    pub fn push_u64(&mut self, v: u64) {
        if self.spilled() || self.len + INT_MAX > INLINE {
            return self.push_str(itoa::Buffer::new().format(v));
        }
        // SAFETY: at least INT_MAX bytes are free after `len`, checked above.
        unsafe {
            let dst = self.inline.as_mut_ptr().cast::<u8>().add(self.len);
            let n = write_digits(v, dst);
            dst.add(n).write(SEP);
            self.len += n + 1;
        }
    }

    /// Appends a signed integer label value in decimal.
    #[inline(always)]
    pub fn push_i64(&mut self, v: i64) {
        if v >= 0 {
            return self.push_u64(v as u64);
        }
        if self.spilled() || self.len + INT_MAX > INLINE {
            return self.push_str(itoa::Buffer::new().format(v));
        }
        // SAFETY: at least INT_MAX bytes are free after `len` (a sign and 19 digits fit).
        unsafe {
            let dst = self.inline.as_mut_ptr().cast::<u8>().add(self.len);
            dst.write(b'-');
            let n = write_digits(v.unsigned_abs(), dst.add(1));
            dst.add(n + 1).write(SEP);
            self.len += n + 2;
        }
    }

    /// Appends a label value formatted with `Display`.
    pub fn push_display<T: std::fmt::Display + ?Sized>(&mut self, v: &T) {
        use std::fmt::Write as _;
        struct W<'a>(&'a mut KeyBuf);
        impl std::fmt::Write for W<'_> {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                self.0.push_raw(s.as_bytes());
                Ok(())
            }
        }
        // Writing to a KeyBuf never fails; a failing `Display` impl leaves what it wrote.
        let _ = write!(W(self), "{v}");
        self.push_raw(&[SEP]);
    }

    fn push_raw(&mut self, bytes: &[u8]) {
        if !self.spilled() && self.len + bytes.len() <= INLINE {
            // SAFETY: in bounds, checked above.
            unsafe {
                let dst = self.inline.as_mut_ptr().cast::<u8>().add(self.len);
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len());
            }
            self.len += bytes.len();
        } else {
            self.spill();
            self.heap.extend_from_slice(bytes);
        }
    }

    #[inline(always)]
    fn inline_bytes(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of `inline` are initialised.
        unsafe { std::slice::from_raw_parts(self.inline.as_ptr().cast::<u8>(), self.len) }
    }

    /// Length of the key so far, in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        if self.spilled() { self.heap.len() } else { self.len }
    }

    /// Whether the key is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key built so far.
    #[inline(always)]
    pub fn as_bytes(&self) -> &[u8] {
        if self.spilled() { &self.heap } else { self.inline_bytes() }
    }

    /// A copy of this key with one more label value inserted at byte offset `at` (a value
    /// boundary obtained from [`len`](Self::len)).
    pub fn with_value_at(&self, at: usize, value: &str) -> KeyBuf {
        let bytes = self.as_bytes();
        let mut out = KeyBuf::new();
        out.push_raw(&bytes[..at]);
        out.push_str(value);
        out.push_raw(&bytes[at..]);
        out
    }
}

/// Copies `src` to `dst`; label values are short, and a call into libc's `memcpy` for each costs
/// more than the copy, so up to 16 bytes are moved with (possibly overlapping) unaligned words.
///
/// # Safety
/// `dst` must be valid for `src.len()` bytes of writes and not overlap `src`.
#[inline(always)]
unsafe fn copy(src: &[u8], dst: *mut u8) {
    let n = src.len();
    let s = src.as_ptr();
    // SAFETY: every read is within `src` and every write within `dst[..n]`.
    unsafe {
        if n >= 8 && n <= 16 {
            let head = s.cast::<u64>().read_unaligned();
            let tail = s.add(n - 8).cast::<u64>().read_unaligned();
            dst.cast::<u64>().write_unaligned(head);
            dst.add(n - 8).cast::<u64>().write_unaligned(tail);
        } else if n >= 4 && n < 8 {
            let head = s.cast::<u32>().read_unaligned();
            let tail = s.add(n - 4).cast::<u32>().read_unaligned();
            dst.cast::<u32>().write_unaligned(head);
            dst.add(n - 4).cast::<u32>().write_unaligned(tail);
        } else if n < 4 {
            for i in 0..n {
                dst.add(i).write(*s.add(i));
            }
        } else {
            std::ptr::copy_nonoverlapping(s, dst, n);
        }
    }
}

const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes `v` in decimal at `dst`, returns the number of digits.
///
/// # Safety
/// `dst` must be valid for 20 bytes of writes.
#[inline(always)]
unsafe fn write_digits(mut v: u64, dst: *mut u8) -> usize {
    let n = v.checked_ilog10().unwrap_or(0) as usize + 1;
    let mut i = n;
    // SAFETY (all writes): `i <= n <= 20` and the caller guarantees 20 writable bytes.
    unsafe {
        while v >= 100 {
            let d = (v % 100) as usize * 2;
            v /= 100;
            i -= 2;
            dst.add(i).write(PAIRS[d]);
            dst.add(i + 1).write(PAIRS[d + 1]);
        }
        if v >= 10 {
            let d = v as usize * 2;
            dst.add(i - 2).write(PAIRS[d]);
            dst.add(i - 1).write(PAIRS[d + 1]);
        } else {
            dst.add(i - 1).write(b'0' + v as u8);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(k: &KeyBuf) -> Vec<String> {
        let b = k.as_bytes();
        assert_eq!(b.last(), Some(&SEP));
        b[..b.len() - 1].split(|&c| c == SEP).map(|v| String::from_utf8(v.to_vec()).unwrap()).collect()
    }

    #[test]
    fn integers_match_display() {
        let cases = [0u64, 7, 9, 10, 99, 100, 101, 12345, 999_999, u32::MAX as u64, u64::MAX];
        let signed = [-1i64, -10, -99, i64::MIN, i64::MAX];
        let mut k = KeyBuf::new();
        let mut want = Vec::new();
        // Three rounds: the first ones inline, the last ones past the inline buffer.
        for _ in 0..3 {
            for v in cases {
                k.push_u64(v);
                want.push(v.to_string());
            }
            for v in signed {
                k.push_i64(v);
                want.push(v.to_string());
            }
        }
        assert!(k.spilled());
        assert_eq!(values(&k), want);
    }

    #[test]
    fn copies_of_every_short_length() {
        let text = "abcdefghijklmnopqrstuvwxyz0123456789";
        let mut k = KeyBuf::new();
        let mut want = Vec::new();
        for n in 0..=20 {
            k.push_str(&text[..n]);
            want.push(text[..n].to_owned());
        }
        assert_eq!(values(&k), want);
    }

    #[test]
    fn spills_and_inserts() {
        let mut k = KeyBuf::new();
        k.push_str("x");
        let at = k.len();
        k.push_str(&"y".repeat(300));
        k.push_display(&1.5);
        assert_eq!(k.len(), 2 + 301 + 4);
        let with = k.with_value_at(at, "mid");
        assert_eq!(values(&with), ["x", "mid", &"y".repeat(300), "1.5"]);
        let mut short = KeyBuf::new();
        short.push_display(&'c');
        short.push_u64(5);
        assert_eq!(values(&short), ["c", "5"]);
        assert_eq!(values(&short.with_value_at(0, "")), ["", "c", "5"]);
    }
}
