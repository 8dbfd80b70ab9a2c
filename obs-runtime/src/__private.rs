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
}

impl Site {
    /// A call site of `def`.
    pub const fn new(def: &'static MetricDef) -> Site {
        Site { def, family: OnceLock::new() }
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
