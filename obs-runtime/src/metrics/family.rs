//! One metric family: its series, found without a lock, and capped.
//!
//! Series live in a fixed-size open-addressing table of atomic pointers, sized at creation to
//! twice the family's series cap. Lookups take no lock: they hash the encoded label values and
//! probe with `Acquire` loads. Only the creation of a series takes the family's mutex. Series are
//! never removed, so they are leaked into `&'static` references; the cap bounds that memory
//! (see `docs/design/metric-storage.md`).

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use super::exemplar::{Exemplar, Exemplars};
pub use super::key::KeyBuf;
use super::key::KeyView;
use super::{MetricDef, MetricKind};
use crate::context::{SpanIds, sampled_span};

/// Separates label values inside a series key: `0xFF` never occurs in UTF-8.
pub(crate) const SEP: u8 = 0xFF;

/// The label value given to every label of the overflow series.
pub const OVERFLOW_LABEL_VALUE: &str = "__overflow__";

/// Label values are cut to this many characters (and `…`) when a series is created.
pub(crate) const MAX_LABEL_VALUE_CHARS: usize = 200;

/// `T` alone in its 64-byte cache line(s). What a recording writes is kept in these, so that
/// two threads recording into two series never write one line (no false sharing), and a thread
/// looking a series up never reads the line another thread is writing. 64, not the 128 of
/// crossbeam's `CachePadded` on x86-64 (Intel's adjacent-line prefetcher pairs lines): 128
/// measured no better against false sharing here and cost 2-5 ns on lookups from the larger
/// footprint (`docs/design/metric-storage.md`).
#[repr(align(64))]
pub(crate) struct Padded<T>(pub(crate) T);

/// Bucket counts per block: 16 × 8 bytes, two lines.
const BLOCK: usize = 16;

/// One time series: a label combination and its value.
pub struct Series {
    /// The value: a counter's count, a float counter's or gauge's bits, a histogram's sum (as
    /// `f64` bits). The only word a counter's recording writes, alone in its lines.
    cell: Padded<AtomicU64>,
    hash: u64,
    /// The key as compared on lookup (see `KeyBuf`).
    words: Box<[u64]>,
    /// The key as bytes: label values, each followed by `SEP`.
    key: Box<[u8]>,
    /// Whether this is a family's overflow series (call sites do not cache it, so that each
    /// recording past the cap is counted).
    pub(crate) overflow: bool,
    pub(crate) value: Value,
    /// The exemplars (`super::exemplar`): none until a recording inside a sampled span.
    exemplars: Exemplars,
}

/// What a series records; read only (the atomics it names live in [`Series::cell`] and the
/// histogram's blocks).
pub(crate) enum Value {
    Int,
    /// An `f64` stored as its bits (a float counter or a gauge).
    Float,
    Histogram(Buckets),
}

pub(crate) struct Buckets {
    pub(crate) bounds: &'static [f64],
    /// Per-bucket (not cumulative) counts, the last one `+Inf`, 16 to a padded block.
    blocks: Box<[Padded<[AtomicU64; BLOCK]>]>,
}

impl Buckets {
    #[inline]
    fn count(&self, i: usize) -> &AtomicU64 {
        &self.blocks[i / BLOCK].0[i % BLOCK]
    }

    /// The per-bucket counts (not cumulative), `+Inf` last.
    pub(crate) fn counts(&self) -> impl Iterator<Item = u64> + '_ {
        (0..=self.bounds.len()).map(|i| self.count(i).load(Ordering::Relaxed))
    }

    /// The bucket `x` falls in: bounds are inclusive upper bounds (`le`); NaN lands in `+Inf`,
    /// as in the Go client.
    #[inline]
    fn index(&self, x: f64) -> usize {
        if x.is_nan() { self.bounds.len() } else { self.bounds.partition_point(|&b| b < x) }
    }
}

fn add_f64(cell: &AtomicU64, v: f64) {
    let mut old = cell.load(Ordering::Relaxed);
    loop {
        let new = (f64::from_bits(old) + v).to_bits();
        match cell.compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(current) => old = current,
        }
    }
}

impl Series {
    fn new(def: &'static MetricDef, key: KeyView<'_>) -> Series {
        let (hash, words, key) = (key.hash, key.to_words(), key.to_bytes().into_boxed_slice());
        let (value, exemplars) = match def.kind {
            MetricKind::Counter => (Value::Int, 1),
            MetricKind::FloatCounter => (Value::Float, 1),
            MetricKind::Gauge => (Value::Float, 0),
            MetricKind::Histogram => {
                let blocks = def.buckets.len() / BLOCK + 1;
                let blocks = (0..blocks).map(|_| Padded([const { AtomicU64::new(0) }; BLOCK])).collect();
                (Value::Histogram(Buckets { bounds: def.buckets, blocks }), def.buckets.len() + 1)
            }
        };
        let cell = Padded(AtomicU64::new(match value {
            Value::Int => 0,
            _ => 0f64.to_bits(),
        }));
        Series { cell, hash, words, key, value, overflow: false, exemplars: Exemplars::new(exemplars) }
    }

    /// The value's word (see [`Series::cell`]).
    pub(crate) fn cell(&self) -> &AtomicU64 {
        &self.cell.0
    }

    /// Adds one to a counter, with the thread's sampled span as its exemplar.
    #[inline]
    pub fn inc(&self) {
        self.inc_by_u64(1)
    }

    /// Adds `n` to an integer counter, with the thread's sampled span as its exemplar.
    #[inline]
    pub fn inc_by_u64(&self, n: u64) {
        self.count(n, sampled_span())
    }

    /// Adds one to a counter, with `span` as its exemplar (a span the caller holds).
    #[inline]
    pub(crate) fn inc_with(&self, span: Option<SpanIds>) {
        self.count(1, span)
    }

    #[inline(always)]
    fn count(&self, n: u64, span: Option<SpanIds>) {
        match &self.value {
            Value::Int => {
                self.cell.0.fetch_add(n, Ordering::Relaxed);
            }
            Value::Float => add_f64(&self.cell.0, n as f64),
            Value::Histogram(_) => return,
        }
        if let Some(span) = span {
            self.exemplars.record(0, n as f64, span);
        }
    }

    /// Adds `x` to a float counter, with the thread's sampled span as its exemplar.
    #[inline]
    pub(crate) fn count_f64(&self, x: f64) {
        self.add_f64(x);
        if let Some(span) = sampled_span() {
            self.exemplars.record(0, x, span);
        }
    }

    /// Adds `x` to a float counter or gauge (gauges accept negative values); no exemplar.
    #[inline]
    pub fn add_f64(&self, x: f64) {
        match &self.value {
            Value::Float => add_f64(&self.cell.0, x),
            Value::Int if x >= 0.0 => {
                self.cell.0.fetch_add(x as u64, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Sets a gauge.
    #[inline]
    pub fn set_f64(&self, x: f64) {
        if let Value::Float = &self.value {
            self.cell.0.store(x.to_bits(), Ordering::Relaxed);
        }
    }

    /// Records one observation into a histogram, with the thread's sampled span as its exemplar.
    #[inline]
    pub fn observe(&self, x: f64) {
        self.observe_with(x, sampled_span())
    }

    /// Records one observation into a histogram, with `span` as its exemplar.
    #[inline]
    pub(crate) fn observe_with(&self, x: f64, span: Option<SpanIds>) {
        if let Value::Histogram(h) = &self.value {
            let i = h.index(x);
            h.count(i).fetch_add(1, Ordering::Relaxed);
            add_f64(&self.cell.0, x);
            if let Some(span) = span {
                self.exemplars.record(i, x, span);
            }
        }
    }

    /// The exemplar of a counter (`i` = 0) or of a histogram's bucket `i`, if one was recorded.
    pub(crate) fn exemplar(&self, i: usize) -> Option<Exemplar> {
        self.exemplars.get(i)
    }

    /// The current value of a counter or gauge (`None` for a histogram).
    pub fn get(&self) -> Option<f64> {
        let bits = self.cell.0.load(Ordering::Relaxed);
        match &self.value {
            Value::Int => Some(bits as f64),
            Value::Float => Some(f64::from_bits(bits)),
            Value::Histogram(_) => None,
        }
    }

    /// The label values, in the family's label order.
    pub fn label_values(&self) -> impl Iterator<Item = &str> {
        let key: &[u8] = &self.key;
        let mut parts = key.split(|&b| b == SEP);
        // Every value is followed by SEP, so the split ends with one empty piece.
        let n = key.iter().filter(|&&b| b == SEP).count();
        (0..n).map(move |_| {
            let bytes = parts.next().unwrap_or_default();
            // Keys are built from `str`s joined by SEP, which is never part of UTF-8.
            std::str::from_utf8(bytes).unwrap_or_default()
        })
    }
}

/// A metric family: its definition and its series.
pub struct Family {
    pub(crate) def: &'static MetricDef,
    pub(crate) cap: usize,
    mask: usize,
    slots: Box<[AtomicPtr<Series>]>,
    len: AtomicUsize,
    /// Creation order; also the lock that serialises creation.
    list: Mutex<Vec<&'static Series>>,
    overflow: OnceLock<&'static Series>,
    overflow_counter: OnceLock<&'static Series>,
    warned: AtomicBool,
    warned_scrub: AtomicBool,
    /// A label value was cut (warned once).
    warned_long: AtomicBool,
}

impl Family {
    pub(crate) fn new(def: &'static MetricDef, default_cap: usize) -> Family {
        for label in redacted_labels(def) {
            tracing::warn!(
                metric = def.name,
                label,
                "this label's name is one the scrubber redacts, so each of its values becomes [REDACTED] and its \
                 series merge into one: rename the label, or keep it with scrub::Rules::keep_key"
            );
        }
        let cap = if def.series_cap > 0 { def.series_cap } else { default_cap }.max(1);
        // A family without labels has exactly one series.
        let cap = if def.labels.is_empty() { 1 } else { cap };
        let size = (cap * 2).next_power_of_two().max(2);
        Family {
            def,
            cap,
            mask: size - 1,
            slots: (0..size).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect(),
            len: AtomicUsize::new(0),
            list: Mutex::new(Vec::new()),
            overflow: OnceLock::new(),
            overflow_counter: OnceLock::new(),
            warned: AtomicBool::new(false),
            warned_scrub: AtomicBool::new(false),
            warned_long: AtomicBool::new(false),
        }
    }

    /// The definition this family was registered with.
    pub fn def(&self) -> &'static MetricDef {
        self.def
    }

    #[inline]
    fn start(&self, hash: u64) -> usize {
        // Fibonacci hashing spreads the key hash over the table's bits.
        (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & self.mask
    }

    #[inline(always)]
    fn find(&self, key: &KeyView<'_>) -> Result<&'static Series, usize> {
        let mut i = self.start(key.hash);
        loop {
            let p = self.slots[i].load(Ordering::Acquire);
            if p.is_null() {
                return Err(i);
            }
            // SAFETY: non-null slots hold pointers from `Box::leak`, never freed or moved.
            let s: &'static Series = unsafe { &*p };
            if s.hash == key.hash && key.matches(&s.words) {
                return Ok(s);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The series for a key, created on first use; past the cap, the overflow series.
    #[inline(always)]
    pub fn series(&'static self, key: &KeyBuf) -> &'static Series {
        let key = key.view();
        match self.find(&key) {
            Ok(s) => s,
            Err(_) => self.create(&key),
        }
    }

    /// The series for label values given as strings.
    pub fn series_for(&'static self, values: &[&str]) -> &'static Series {
        self.series_of(values.iter().copied())
    }

    /// The series for label values in catalog order (straight into the key: no list of them).
    pub(crate) fn series_of<'v>(&'static self, values: impl IntoIterator<Item = &'v str>) -> &'static Series {
        let mut key = KeyBuf::new();
        for v in values {
            key.push_str(v);
        }
        self.series(&key)
    }

    #[cold]
    fn create(&'static self, key: &KeyView<'_>) -> &'static Series {
        // A new label combination: personal data in a label value never becomes a series of its
        // own (nor reaches Prometheus); the call is recorded into the scrubbed combination's.
        if let Some(clean) = self.scrubbed(key) {
            let clean = clean.view();
            // Not through `series`: the clean key is never scrubbed again.
            return match self.find(&clean) {
                Ok(s) => s,
                Err(_) => self.create_clean(&clean),
            };
        }
        self.create_clean(key)
    }

    #[cold]
    fn create_clean(&'static self, key: &KeyView<'_>) -> &'static Series {
        // Acquire, pairing with the Release below: a count that includes a series comes with its
        // slot, so `find` sees it (on weakly ordered CPUs too).
        if self.len.load(Ordering::Acquire) >= self.cap {
            // The series may have been created since the caller looked: then it is no overflow.
            // Checked without the lock, so that a label flood does not serialise on it.
            return match self.find(key) {
                Ok(s) => s,
                Err(_) => self.overflowed(),
            };
        }
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        match self.find(key) {
            Ok(s) => s,
            Err(_) if list.len() >= self.cap => {
                drop(list);
                self.overflowed()
            }
            Err(slot) => {
                let s: &'static Series = Box::leak(Box::new(Series::new(self.def, *key)));
                self.slots[slot].store(s as *const Series as *mut Series, Ordering::Release);
                list.push(s);
                self.len.store(list.len(), Ordering::Release);
                s
            }
        }
    }

    /// The key with its label values scrubbed (and cut), if that changed any.
    fn scrubbed(&self, key: &KeyView<'_>) -> Option<KeyBuf> {
        let bytes = key.to_bytes();
        let values = bytes.split(|&b| b == SEP).take(self.def.labels.len());
        let mut clean = KeyBuf::new();
        let (mut changed, mut scrubbed_any) = (false, false);
        for (name, value) in self.def.labels.iter().zip(values) {
            let value = std::str::from_utf8(value).unwrap_or_default();
            let scrubbed = crate::scrub::scrub_field(name, value);
            let scrubbed_changed = scrubbed != value;
            // Long values are cut: the series cap bounds the count of series, this their size.
            let kept = match scrubbed.char_indices().nth(MAX_LABEL_VALUE_CHARS) {
                Some((cut, _)) => {
                    if !self.warned_long.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            metric = self.def.name,
                            label = *name,
                            "a label value longer than {MAX_LABEL_VALUE_CHARS} characters was cut (label values should \
                             come from a small fixed set)"
                        );
                    }
                    changed = true;
                    format!("{}…", &scrubbed[..cut])
                }
                None => scrubbed.into_owned(),
            };
            changed |= scrubbed_changed;
            scrubbed_any |= scrubbed_changed;
            clean.push_str(&kept);
        }
        if scrubbed_any && !self.warned_scrub.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                metric = self.def.name,
                "a label value held personal data or a secret; it was scrubbed (label values should come from a \
                 small fixed set)"
            );
        }
        changed.then_some(clean)
    }

    fn overflow_series(&'static self) -> &'static Series {
        self.overflow.get_or_init(|| {
            let mut key = KeyBuf::new();
            for _ in self.def.labels {
                key.push_str(OVERFLOW_LABEL_VALUE);
            }
            let mut s = Series::new(self.def, key.view());
            s.overflow = true;
            Box::leak(Box::new(s))
        })
    }

    #[cold]
    fn overflowed(&'static self) -> &'static Series {
        if !self.warned.load(Ordering::Relaxed) && !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                metric = self.def.name,
                series_cap = self.cap,
                "metric reached its series cap; new label combinations go to the overflow series \
                 (every label = \"{OVERFLOW_LABEL_VALUE}\")"
            );
        }
        // The overflow counter's own family has room for every family; never count into itself
        // (its `OnceLock` would be re-entered).
        if !std::ptr::eq(self.def, &super::own::OVERFLOW) {
            self.overflow_counter
                .get_or_init(|| super::registry().overflow_family().series_for(&[self.def.name]))
                .inc();
        }
        self.overflow_series()
    }

    /// The series, in creation order, then the overflow series if it was used.
    #[doc(hidden)]
    pub fn snapshot(&self) -> Vec<&'static Series> {
        let mut v = self.list.lock().unwrap_or_else(|e| e.into_inner()).clone();
        v.extend(self.overflow.get().copied());
        v
    }

    /// How many distinct label combinations exist (the overflow series not included).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no series exists yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Labels whose name the scrubber redacts (`token_type`): their values would all read
/// `[REDACTED]`.
fn redacted_labels(def: &MetricDef) -> impl Iterator<Item = &'static str> + '_ {
    def.labels.iter().copied().filter(|l| crate::scrub::classify(l) == crate::scrub::KeyClass::Redact)
}

#[cfg(test)]
mod tests {
    use super::*;

    static DEF: MetricDef = MetricDef {
        name: "unit_family_total",
        help: "h",
        kind: MetricKind::Counter,
        labels: &["a", "b"],
        buckets: &[],
        series_cap: 64,
    };

    fn family() -> &'static Family {
        Box::leak(Box::new(Family::new(&DEF, 10)))
    }

    #[test]
    fn same_values_same_series_and_values_round_trip() {
        let f = family();
        let s1 = f.series_for(&["1", "ü\"\n"]);
        let s2 = f.series_for(&["1", "ü\"\n"]);
        assert!(std::ptr::eq(s1, s2));
        assert!(!std::ptr::eq(s1, f.series_for(&["1", "other"])));
        // Values are not confused by where one ends and the next begins.
        assert!(!std::ptr::eq(f.series_for(&["ab", "c"]), f.series_for(&["a", "bc"])));
        assert_eq!(s1.label_values().collect::<Vec<_>>(), ["1", "ü\"\n"]);
        assert_eq!(f.len(), 4);
    }

    #[test]
    fn labels_named_like_secrets_are_found() {
        static SECRETISH: MetricDef = MetricDef {
            name: "unit_logins_total",
            help: "h",
            kind: MetricKind::Counter,
            labels: &["token_type", "channel", "api_key"],
            buckets: &[],
            series_cap: 8,
        };
        assert_eq!(redacted_labels(&SECRETISH).collect::<Vec<_>>(), ["token_type", "api_key"]);
        assert_eq!(redacted_labels(&DEF).count(), 0);
    }

    #[test]
    fn long_label_values_are_cut_so_that_a_series_stays_small() {
        let f = family();
        let long = "é".repeat(5_000);
        let s = f.series_for(&["1", &long]);
        let stored: Vec<String> = s.label_values().map(str::to_owned).collect();
        assert_eq!(stored[1].chars().count(), MAX_LABEL_VALUE_CHARS + 1);
        assert!(stored[1].ends_with('…') && stored[1].starts_with("éé"));
        // The same long value, and another with the same start, land in the cut series.
        assert!(std::ptr::eq(s, f.series_for(&["1", &long])));
        assert!(std::ptr::eq(s, f.series_for(&["1", &format!("{long}and more")])));
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn concurrent_creation_makes_each_series_once_and_respects_the_cap() {
        let f = family();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    for i in 0..200u32 {
                        f.series_for(&[&i.to_string(), "t"]).inc();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(f.len(), 64);
        let snapshot = f.snapshot();
        assert_eq!(snapshot.len(), 65, "64 series and the overflow series");
        // Each thread creates or finds 0..64 before going past the cap, so those are the series
        // and each has exactly one increment per thread: none went to overflow by a race.
        for s in &snapshot[..64] {
            let i: u32 = s.label_values().next().unwrap().parse().unwrap();
            assert!(i < 64, "series {i} should have overflowed");
            assert_eq!(s.get(), Some(4.0), "series {i}");
        }
        let overflow = snapshot.last().unwrap();
        assert!(overflow.overflow);
        assert_eq!(overflow.get(), Some(4.0 * 136.0));
        assert_eq!(overflow.label_values().collect::<Vec<_>>(), [OVERFLOW_LABEL_VALUE; 2]);
        let mut keys: Vec<_> = snapshot.iter().map(|s| s.label_values().collect::<Vec<_>>()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 65, "no series was created twice");
    }

    #[test]
    fn personal_data_in_label_values_is_scrubbed_into_one_series() {
        static DEF: MetricDef = MetricDef {
            name: "test_signups_total",
            help: "h",
            kind: MetricKind::Counter,
            labels: &["source", "password"],
            buckets: &[],
            series_cap: 100,
        };
        let fam: &'static Family = Box::leak(Box::new(Family::new(&DEF, 100)));
        let a = fam.series_for(&["ana@example.org", "x"]);
        let b = fam.series_for(&["bo@example.org", "y"]);
        a.inc();
        b.inc();
        fam.series_for(&["ana@example.org", "x"]).inc();
        assert!(std::ptr::eq(a, b));
        assert_eq!(a.label_values().collect::<Vec<_>>(), ["[EMAIL]", "[REDACTED]"]);
        assert_eq!(a.get(), Some(3.0));
        assert_eq!(fam.len(), 1);
    }

    #[test]
    fn what_a_recording_writes_shares_no_cache_line() {
        // The value word is alone in its line; the read-only rest follows in lines of its own
        // (`docs/design/metric-storage.md`); a series stays within three lines.
        assert_eq!(std::mem::align_of::<Series>(), 64);
        assert_eq!(std::mem::size_of::<Padded<AtomicU64>>(), 64);
        assert!(std::mem::size_of::<Series>() <= 192, "{}", std::mem::size_of::<Series>());
        assert_eq!(std::mem::size_of::<Padded<[AtomicU64; BLOCK]>>(), 128);
        assert_eq!(std::mem::align_of::<Padded<[AtomicU64; BLOCK]>>(), 64);
    }

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        static H: MetricDef = MetricDef {
            name: "unit_h",
            help: "h",
            kind: MetricKind::Histogram,
            labels: &[],
            buckets: &[1.0, 2.0],
            series_cap: 0,
        };
        let f: &'static Family = Box::leak(Box::new(Family::new(&H, 10)));
        let s = f.series(&KeyBuf::new());
        for x in [0.5, 1.0, 1.5, 2.0, 3.0, f64::NAN] {
            s.observe(x);
        }
        let Value::Histogram(h) = &s.value else { unreachable!() };
        assert_eq!(h.counts().collect::<Vec<_>>(), [2, 2, 2]);
    }
}
