//! The only API the obs macros call. Not public: no stability promise.

use std::fmt::Display;
use std::sync::OnceLock;

pub use crate::metrics::family::{KeyBuf, Series};
use crate::metrics::{Family, registry};
pub use crate::metrics::{MetricDef, MetricKind};

/// Whether the macros instrument (the feature `enabled`), for the test of the compile-out build.
pub const ENABLED: bool = cfg!(feature = "enabled");

/// Whether metrics are recorded: `false` after [`init`](crate::init) with observability
/// disabled. The macros check it before formatting labels or looking up a series.
#[inline(always)]
pub fn metrics_on() -> bool {
    !crate::is_off()
}

/// One metric used at one call site: resolves its family once.
pub struct Site {
    def: &'static MetricDef,
    family: OnceLock<&'static Family>,
    /// The series by raw integer label values, for sites whose labels are all integers.
    raw: OnceLock<RawIndex>,
}

/// The most label expressions a site's raw index takes (more go through the key every call).
pub const MAX_RAW: usize = 4;

/// A call site's series by the raw values of its integer label expressions: on a hit, a call
/// neither formats its labels in decimal nor hashes and compares the formatted key (two thirds of
/// a call with three `u64` labels on an AMD EPYC, docs/design/overhead.md). Open addressing over atomic pointers,
/// as the family's own table; an entry is written once and never removed, at most the family's
/// series cap of them (distinct raw values that scrub to one series each take an entry), and the
/// overflow series is never entered (each call past the cap is counted).
struct RawIndex {
    mask: usize,
    slots: Box<[std::sync::atomic::AtomicPtr<RawEntry>]>,
    len: std::sync::atomic::AtomicUsize,
    cap: usize,
}

struct RawEntry {
    raws: [u64; MAX_RAW],
    series: &'static Series,
}

impl RawIndex {
    fn new(cap: usize) -> RawIndex {
        let size = (cap * 2).next_power_of_two().max(2);
        RawIndex {
            mask: size - 1,
            slots: (0..size).map(|_| std::sync::atomic::AtomicPtr::new(std::ptr::null_mut())).collect(),
            len: std::sync::atomic::AtomicUsize::new(0),
            cap,
        }
    }

    #[inline(always)]
    fn start(&self, raws: [u64; MAX_RAW]) -> usize {
        (crate::metrics::key::hash_raw(raws).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & self.mask
    }

    /// Taken and compared by value, word by word: the values come in registers, and reading them
    /// back from memory as 16-byte vectors right after 8-byte stores stalled on store forwarding.
    #[inline(always)]
    fn get(&self, raws: [u64; MAX_RAW]) -> Option<&'static Series> {
        let mut i = self.start(raws);
        loop {
            let p = self.slots[i].load(std::sync::atomic::Ordering::Acquire);
            if p.is_null() {
                return None;
            }
            // SAFETY: non-null slots hold pointers from `Box::into_raw`, never freed or replaced.
            let e = unsafe { &*p };
            if e.raws[0] == raws[0] && e.raws[1] == raws[1] && e.raws[2] == raws[2] && e.raws[3] == raws[3] {
                return Some(e.series);
            }
            i = (i + 1) & self.mask;
        }
    }

    #[cold]
    fn insert(&self, raws: [u64; MAX_RAW], series: &'static Series) {
        use std::sync::atomic::Ordering;
        // Full (checked before the reservation below, so that a full index costs misses a load,
        // not two contended writes), or the overflow series.
        if series.overflow || self.len.load(Ordering::Relaxed) >= self.cap {
            return;
        }
        // A place reserved before the entry is written: never more than `cap` entries, so the
        // table (twice the cap) always has an empty slot that ends a probe.
        if self.len.fetch_add(1, Ordering::Relaxed) >= self.cap {
            self.len.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let entry = Box::into_raw(Box::new(RawEntry { raws, series }));
        let mut i = self.start(raws);
        loop {
            match self.slots[i].compare_exchange(std::ptr::null_mut(), entry, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                // SAFETY: as in `get`.
                Err(other) if unsafe { (*other).raws == raws } => break,
                Err(_) => i = (i + 1) & self.mask,
            }
        }
        // Another thread entered the same values first.
        self.len.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: `entry` came from `Box::into_raw` above and was never published.
        drop(unsafe { Box::from_raw(entry) });
    }
}

impl Site {
    /// A call site of `def`.
    pub const fn new(def: &'static MetricDef) -> Site {
        Site { def, family: OnceLock::new(), raw: OnceLock::new() }
    }

    /// The series for the raw values of the site's integer label expressions (the unused words
    /// zero; a slot's type is fixed at its site, so `-1i64` and `u64::MAX` never meet), if a call
    /// with the same values resolved it before.
    #[inline(always)]
    pub fn raw_series(&self, raws: [u64; MAX_RAW]) -> Option<&'static Series> {
        self.raw.get()?.get(raws)
    }

    /// [`series`](Self::series) for the key a call formatted on a miss of
    /// [`raw_series`](Self::raw_series), remembered under `raws` (when the labels are all
    /// integers). `key` is there whenever the raw index missed.
    #[inline(never)]
    pub fn series_remembered(&self, key: Option<&KeyBuf>, raws: Option<[u64; MAX_RAW]>) -> &'static Series {
        let series = match key {
            Some(key) => self.series(key),
            // Not reached: the macro formats the key on every miss (were it reached, a series
            // without label values rather than a panic in the caller).
            None => self.family().series(&KeyBuf::new()),
        };
        if let Some(raws) = raws {
            self.remember(raws, series);
        }
        series
    }

    #[cold]
    #[inline(never)]
    fn remember(&self, raws: [u64; MAX_RAW], series: &'static Series) {
        self.raw.get_or_init(|| RawIndex::new(self.family().cap)).insert(raws, series);
    }

    /// The family, registered on first use.
    #[inline]
    pub fn family(&self) -> &'static Family {
        match self.family.get() {
            Some(f) => f,
            None => self.family.get_or_init(|| registry().family(self.def)),
        }
    }

    /// The series for a key built with [`KeyBuf`].
    #[inline(always)]
    pub fn series(&self, key: &KeyBuf) -> &'static Series {
        self.family().series(key)
    }
}

/// A call site whose labels are all literals: its series is resolved once, then each call is one
/// atomic operation.
pub struct FixedSite {
    site: Site,
    values: &'static [&'static str],
    series: OnceLock<&'static Series>,
}

impl FixedSite {
    /// A call site of `def` with these label values (in catalog order).
    pub const fn new(def: &'static MetricDef, values: &'static [&'static str]) -> FixedSite {
        FixedSite { site: Site::new(def), values, series: OnceLock::new() }
    }

    /// The series.
    #[inline]
    pub fn series(&self) -> &'static Series {
        match self.series.get() {
            Some(s) => s,
            None => self.resolve(),
        }
    }

    #[cold]
    fn resolve(&self) -> &'static Series {
        let s = self.site.family().series_for(self.values);
        // The overflow series is looked up on every call, so that each one is counted in
        // `obs_metric_overflow_total`.
        if s.overflow { s } else { self.series.get_or_init(|| s) }
    }
}

/// Checks at the label expression's span that it implements `Display`.
#[inline(always)]
pub fn label_value<T: Display + ?Sized>(v: &T) -> &T {
    v
}

/// Wraps a label value for the autoref-specialised formatting below: integers and strings take a
/// fast path, anything else `Display`.
pub struct LabelArg<'a, T: ?Sized>(pub &'a T);

/// An integer label value's raw value (chosen first by method resolution).
pub trait RawLabel {
    /// The value as 64 bits.
    fn __obs_raw(&self) -> Option<u64>;
}

/// Any other label value: no raw value.
pub trait NoRawLabel {
    /// `None`.
    fn __obs_raw(&self) -> Option<u64>;
}

impl<T: ?Sized> NoRawLabel for &LabelArg<'_, T> {
    #[inline(always)]
    fn __obs_raw(&self) -> Option<u64> {
        None
    }
}

macro_rules! raw_int {
    ($($t:ty),*) => {$(
        impl RawLabel for LabelArg<'_, $t> {
            #[inline(always)]
            fn __obs_raw(&self) -> Option<u64> {
                Some(*self.0 as u64)
            }
        }
        impl RawLabel for LabelArg<'_, &$t> {
            #[inline(always)]
            fn __obs_raw(&self) -> Option<u64> {
                Some(**self.0 as u64)
            }
        }
    )*};
}
raw_int!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

/// Fast formatting of integers and strings (chosen first by method resolution).
pub trait FastLabel {
    /// Appends the value to the key.
    fn __obs_push(&self, key: &mut KeyBuf);
}

/// Any `Display` value (chosen when [`FastLabel`] does not apply).
pub trait DisplayLabel {
    /// Appends the value to the key.
    fn __obs_push(&self, key: &mut KeyBuf);
}

impl<T: Display + ?Sized> DisplayLabel for &LabelArg<'_, T> {
    #[inline]
    fn __obs_push(&self, key: &mut KeyBuf) {
        key.push_display(self.0)
    }
}

macro_rules! fast_int {
    ($($t:ty => $push:ident as $as:ty),*) => {$(
        impl FastLabel for LabelArg<'_, $t> {
            #[inline(always)]
            fn __obs_push(&self, key: &mut KeyBuf) {
                key.$push(*self.0 as $as)
            }
        }
        impl FastLabel for LabelArg<'_, &$t> {
            #[inline(always)]
            fn __obs_push(&self, key: &mut KeyBuf) {
                key.$push(**self.0 as $as)
            }
        }
    )*};
}
fast_int!(u8 => push_u64 as u64, u16 => push_u64 as u64, u32 => push_u64 as u64, u64 => push_u64 as u64,
          usize => push_u64 as u64, i8 => push_i64 as i64, i16 => push_i64 as i64, i32 => push_i64 as i64,
          i64 => push_i64 as i64, isize => push_i64 as i64);

macro_rules! fast_str {
    ($($t:ty)*) => {$(
        impl FastLabel for LabelArg<'_, $t> {
            #[inline(always)]
            fn __obs_push(&self, key: &mut KeyBuf) {
                key.push_str(self.0)
            }
        }
    )*};
}
fast_str!(str &str &&str String &String);

impl FastLabel for LabelArg<'_, bool> {
    #[inline]
    fn __obs_push(&self, key: &mut KeyBuf) {
        key.push_str(if *self.0 { "true" } else { "false" })
    }
}

pub use crate::metrics::clock::Start;

/// The start of a timed call.
#[inline(always)]
pub fn now() -> Start {
    Start::now()
}

/// Seconds since `start`.
#[inline(always)]
pub fn elapsed_seconds(start: Start) -> f64 {
    start.elapsed_seconds()
}

/// Handle types returned by `metric!`: each offers only the operations its kind allows.
pub use crate::metrics::handle::{Counter, FloatCounter, Gauge, Histogram};

/// A handle of one series, or of none (metrics off, or compiled out).
pub trait FromSeries {
    /// The handle.
    fn from_series(series: Option<&'static Series>) -> Self;
}

macro_rules! from_series {
    ($($handle:ident),*) => {
        $(impl FromSeries for $handle {
            #[inline(always)]
            fn from_series(series: Option<&'static Series>) -> Self {
                $handle(series)
            }
        })*
    };
}

from_series!(Counter, FloatCounter, Gauge, Histogram);

/// The typed definition `metric_def!` checked at compile time against `K` and `L`.
pub const fn checked_def<K, L>(def: &'static MetricDef) -> crate::metrics::Def<K, L> {
    crate::metrics::Def::checked(def)
}

pub use crate::metrics::def::Unchecked;

/// Observes the time from its creation to its drop (the end of the function's body).
pub struct Timer {
    series: &'static Series,
    start: Start,
}

impl Timer {
    /// Starts timing into `series`.
    #[inline]
    pub fn start(series: &'static Series) -> Timer {
        Timer { series, start: Start::now() }
    }
}

impl Drop for Timer {
    #[inline]
    fn drop(&mut self) {
        self.series.observe(self.start.elapsed_seconds());
    }
}

/// Calls `f` once. With an `FnOnce` bound the closure may give away what it captured (a method
/// can return a reborrow of its `&mut self`); a closure called in place would be inferred `FnMut`.
#[inline(always)]
pub fn call_once<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// What `metric!` evaluates to after a compile error: every operation, so the one real error is
/// not followed by unrelated ones.
pub struct Invalid;

#[allow(missing_docs)]
impl Invalid {
    pub fn inc(self) {}
    pub fn dec(self) {}
    pub fn inc_by<T>(self, _: T) {}
    pub fn add<T>(self, _: T) {}
    pub fn sub<T>(self, _: T) {}
    pub fn set<T>(self, _: T) {}
    pub fn observe<T>(self, _: T) {}
}

pub use crate::trace::site::{
    Entered, Instrumented, InstrumentedCheck, InstrumentedResult, Kind as SpanKind, Level as SpanLevel, SpanSite,
    SpanState, span_enabled,
};

pub use crate::outcome::{
    ErrDebug, ErrDisplay, ErrName, ErrText, NoErr, OutArg, Outcome, OutputErr, OutputOk, TracedResult, is_success,
};

/// Span attribute values: integers, floats, booleans and strings keep their type; a [`Scrub`]
/// value is recorded as its scrubbed JSON; anything else with `Display` (or `Debug` with
/// `?value`). Chosen by method resolution on `&&AttrArg`: `TypedAttr` (on `&AttrArg`) first,
/// then `ScrubAttr` (on `&&AttrArg`), then `DisplayAttr` (on `AttrArg`).
///
/// [`Scrub`]: crate::scrub::Scrub
pub struct AttrArg<'a, T: ?Sized>(pub &'a T);

/// Typed attribute values (chosen first by method resolution).
pub trait TypedAttr {
    /// The OpenTelemetry value.
    fn __obs_attr(&self) -> opentelemetry::Value;
}

/// `Scrub` values, as their scrubbed JSON.
pub trait ScrubAttr {
    /// The OpenTelemetry value.
    fn __obs_attr(&self) -> opentelemetry::Value;
}

/// Any `Display` value.
pub trait DisplayAttr {
    /// The OpenTelemetry value.
    fn __obs_attr(&self) -> opentelemetry::Value;
}

impl<T: crate::scrub::Scrub + ?Sized> ScrubAttr for &&AttrArg<'_, T> {
    fn __obs_attr(&self) -> opentelemetry::Value {
        opentelemetry::Value::String(self.0.scrub().to_string().into())
    }
}

impl<T: Display + ?Sized> DisplayAttr for AttrArg<'_, T> {
    fn __obs_attr(&self) -> opentelemetry::Value {
        opentelemetry::Value::String(self.0.to_string().into())
    }
}

macro_rules! typed_attr {
    ($($t:ty => |$v:ident| $e:expr),* $(,)?) => {$(
        impl TypedAttr for &AttrArg<'_, $t> {
            #[inline]
            fn __obs_attr(&self) -> opentelemetry::Value {
                let $v = self.0;
                $e
            }
        }
    )*};
}
typed_attr!(
    i8 => |v| (*v as i64).into(), i16 => |v| (*v as i64).into(), i32 => |v| (*v as i64).into(),
    i64 => |v| (*v).into(), isize => |v| (*v as i64).into(), u8 => |v| (*v as i64).into(),
    u16 => |v| (*v as i64).into(), u32 => |v| (*v as i64).into(),
    // Unsigned values past i64::MAX keep their digits as a string.
    u64 => |v| i64::try_from(*v).map_or_else(|_| v.to_string().into(), Into::into),
    usize => |v| i64::try_from(*v).map_or_else(|_| v.to_string().into(), Into::into),
    f32 => |v| (*v as f64).into(), f64 => |v| (*v).into(), bool => |v| (*v).into(),
    str => |v| v.to_owned().into(), &str => |v| (*v).to_owned().into(), String => |v| v.clone().into(),
);

/// `?value`: recorded with `Debug` (a `#[derive(Scrub)]` type's `Debug` is its scrubbed form).
pub fn debug_attr<T: std::fmt::Debug + ?Sized>(v: &T) -> opentelemetry::Value {
    opentelemetry::Value::String(format!("{v:?}").into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricKind;

    static DEF: MetricDef = MetricDef {
        name: "unit_raw_index_total",
        help: "h",
        kind: MetricKind::Counter,
        labels: &["member", "delta"],
        buckets: &[],
        series_cap: 3,
    };
    static SITE: Site = Site::new(&DEF);

    fn key(member: u64, delta: i64) -> KeyBuf {
        let mut k = KeyBuf::new();
        k.push_u64(member);
        k.push_i64(delta);
        k
    }

    fn raws(member: u64, delta: i64) -> [u64; MAX_RAW] {
        [member, delta as u64, 0, 0]
    }

    #[test]
    fn raw_values_find_what_their_key_found_and_never_the_overflow() {
        assert!(SITE.raw_series(raws(1, -1)).is_none());
        let s = SITE.series_remembered(Some(&key(1, -1)), Some(raws(1, -1)));
        assert!(std::ptr::eq(SITE.raw_series(raws(1, -1)).unwrap(), s));
        assert_eq!(s.label_values().collect::<Vec<_>>(), ["1", "-1"]);
        assert!(SITE.raw_series(raws(1, 1)).is_none());
        // Remembering the same values again adds no entry.
        SITE.series_remembered(Some(&key(1, -1)), Some(raws(1, -1)));
        SITE.series_remembered(Some(&key(2, 0)), Some(raws(2, 0)));
        SITE.series_remembered(Some(&key(3, 0)), Some(raws(3, 0)));
        let index = SITE.raw.get().unwrap();
        assert_eq!(index.len.load(std::sync::atomic::Ordering::Relaxed), 3);
        // The cap is 3: the fourth combination is the overflow series, looked up every time.
        let overflow = SITE.series_remembered(Some(&key(4, 0)), Some(raws(4, 0)));
        assert!(overflow.overflow);
        assert!(SITE.raw_series(raws(4, 0)).is_none());
        assert_eq!(index.len.load(std::sync::atomic::Ordering::Relaxed), 3);
        for (m, d) in [(1, -1), (2, 0), (3, 0)] {
            let s = SITE.raw_series(raws(m, d)).unwrap();
            assert_eq!(s.label_values().collect::<Vec<_>>(), [m.to_string(), d.to_string()]);
        }
    }
}
