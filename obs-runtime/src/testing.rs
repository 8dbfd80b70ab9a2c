//! Reading recorded values back in tests, without parsing the exposition.
//!
//! ```
//! use obs_runtime::{counted, testing};
//!
//! #[counted(metric = "shop_orders_total", labels(region = "eu", status = "placed"))]
//! fn place_order() {}
//!
//! let before = testing::value("shop_orders_total", &[("region", "eu"), ("status", "placed")]);
//! place_order();
//! let after = testing::value("shop_orders_total", &[("region", "eu"), ("status", "placed")]);
//! assert_eq!(after.unwrap(), before.unwrap_or(0.0) + 1.0);
//! ```

use std::sync::atomic::Ordering;

use crate::metrics::{self, Series};

/// The recorded state of one histogram series.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Number of observations.
    pub count: u64,
    /// Sum of observations.
    pub sum: f64,
    /// `(upper bound, cumulative count)`, ending with `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

fn find(metric: &str, labels: &[(&str, &str)]) -> Option<&'static Series> {
    let family = metrics::family(metric)?;
    let def = family.def();
    let mut values = Vec::with_capacity(def.labels.len());
    for name in def.labels {
        values.push(labels.iter().find(|(n, _)| n == name)?.1);
    }
    if labels.len() != def.labels.len() {
        return None;
    }
    family.snapshot().into_iter().find(|s| s.label_values().eq(values.iter().copied()))
}

/// The value of a counter or gauge series; `None` if the metric or the label combination was
/// never recorded. `labels` may come in any order but must name every label.
pub fn value(metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    find(metric, labels)?.get()
}

/// The state of a histogram series; `None` if never recorded.
pub fn histogram(metric: &str, labels: &[(&str, &str)]) -> Option<HistogramSnapshot> {
    let s = find(metric, labels)?;
    let metrics::family::Value::Histogram(h) = &s.value else { return None };
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(h.bounds.len() + 1);
    for (i, c) in h.counts().enumerate() {
        cumulative += c;
        buckets.push((h.bounds.get(i).copied().unwrap_or(f64::INFINITY), cumulative));
    }
    Some(HistogramSnapshot { count: cumulative, sum: f64::from_bits(s.cell().load(Ordering::Relaxed)), buckets })
}

/// How many label combinations a family holds (the overflow series not included).
pub fn series_count(metric: &str) -> usize {
    metrics::family(metric).map_or(0, |f| f.len())
}
