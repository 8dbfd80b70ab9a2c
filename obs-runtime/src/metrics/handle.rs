//! The typed handles [`metric!`](crate::metric) returns: a counter cannot be set, a gauge cannot
//! be observed; the compiler says so. With observability disabled a handle holds no series:
//! its operations do nothing and its value reads 0.

use super::Series;

/// An integer counter's series.
#[derive(Clone, Copy)]
#[must_use = "a metric handle does nothing until you call `inc`/`inc_by` on it"]
pub struct Counter(pub(crate) Option<&'static Series>);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(self) {
        if let Some(s) = self.0 {
            s.inc_by_u64(1)
        }
    }
    /// Adds `n` (e.g. tokens consumed).
    #[inline]
    pub fn inc_by(self, n: u64) {
        if let Some(s) = self.0 {
            s.inc_by_u64(n)
        }
    }
    /// The current value.
    pub fn get(self) -> u64 {
        self.0.and_then(Series::get).unwrap_or_default() as u64
    }
}

/// A float counter's series (amounts such as revenue).
#[derive(Clone, Copy)]
#[must_use = "a metric handle does nothing until you call `inc`/`inc_by` on it"]
pub struct FloatCounter(pub(crate) Option<&'static Series>);

impl FloatCounter {
    /// Adds one.
    #[inline]
    pub fn inc(self) {
        if let Some(s) = self.0 {
            s.count_f64(1.0)
        }
    }
    /// Adds `amount`. A counter never decreases: a negative or NaN amount is ignored.
    #[inline]
    pub fn inc_by(self, amount: f64) {
        if amount >= 0.0
            && let Some(s) = self.0
        {
            s.count_f64(amount)
        }
    }
    /// The current value.
    pub fn get(self) -> f64 {
        self.0.and_then(Series::get).unwrap_or_default()
    }
}

/// A gauge's series.
#[derive(Clone, Copy)]
#[must_use = "a metric handle does nothing until you call one of its methods"]
pub struct Gauge(pub(crate) Option<&'static Series>);

impl Gauge {
    /// Adds one.
    #[inline]
    pub fn inc(self) {
        if let Some(s) = self.0 {
            s.add_f64(1.0)
        }
    }
    /// Subtracts one.
    #[inline]
    pub fn dec(self) {
        if let Some(s) = self.0 {
            s.add_f64(-1.0)
        }
    }
    /// Adds `x` (may be negative).
    #[inline]
    pub fn add(self, x: f64) {
        if let Some(s) = self.0 {
            s.add_f64(x)
        }
    }
    /// Subtracts `x`.
    #[inline]
    pub fn sub(self, x: f64) {
        if let Some(s) = self.0 {
            s.add_f64(-x)
        }
    }
    /// Sets the value.
    #[inline]
    pub fn set(self, x: f64) {
        if let Some(s) = self.0 {
            s.set_f64(x)
        }
    }
    /// The current value.
    pub fn get(self) -> f64 {
        self.0.and_then(Series::get).unwrap_or_default()
    }
}

/// A histogram's series.
#[derive(Clone, Copy)]
#[must_use = "a metric handle does nothing until you call `observe` on it"]
pub struct Histogram(pub(crate) Option<&'static Series>);

impl Histogram {
    /// Records one observation.
    #[inline]
    pub fn observe(self, x: f64) {
        if let Some(s) = self.0 {
            s.observe(x)
        }
    }
}
