//! Metrics sampled in process every [`EVERY`]: each series' recent values (counters as rates,
//! gauges as values, histograms as percentile lines), no Prometheus needed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::family::{Family, Value};
use crate::metrics::{MetricKind, Series};

/// How often the series are read.
pub(crate) const EVERY: Duration = Duration::from_secs(2);
/// Points kept per series (5 minutes).
pub(crate) const POINTS: usize = 150;
/// Histogram snapshots kept per series, for percentiles over the last minute.
const WINDOW: usize = 31;
/// Series followed at most (beyond, a series shows its current value only).
pub(crate) const MAX_SERIES: usize = 1000;

/// One reading: a counter's or gauge's value, or a histogram's count and the percentiles of
/// what it observed since the reading before (NaN: nothing observed).
#[derive(Clone, Copy)]
pub(crate) struct Point {
    /// Seconds since the sampler started.
    pub(crate) t: f64,
    pub(crate) v: f64,
    pub(crate) q: [f32; 3],
}

pub(crate) struct History {
    pub(crate) points: VecDeque<Point>,
    /// Histograms: per-bucket counts (not cumulative) at each of the last readings.
    buckets: VecDeque<Vec<u64>>,
}

#[derive(Default)]
pub(crate) struct Sampler {
    pub(crate) series: HashMap<usize, History>,
    started: Option<Instant>,
    /// When the reading before the last one was made (a series first seen since then started
    /// from zero after it).
    last: Option<f64>,
}

/// The percentiles taken.
pub(crate) const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

fn key(s: &'static Series) -> usize {
    s as *const Series as usize
}

/// A histogram series' per-bucket counts and bounds.
pub(crate) fn buckets(s: &Series) -> Option<(&'static [f64], Vec<u64>)> {
    match &s.value {
        Value::Histogram(h) => Some((h.bounds, h.counts().collect())),
        _ => None,
    }
}

/// The `q` quantile of per-bucket counts, interpolated within its bucket as Prometheus's
/// `histogram_quantile` does; NaN without observations; the highest finite bound for the
/// `+Inf` bucket.
pub(crate) fn quantile(q: f64, bounds: &[f64], counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return f64::NAN;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        if (below + c) as f64 >= rank && c > 0 {
            let Some(&upper) = bounds.get(i) else { return bounds.last().copied().unwrap_or(f64::NAN) };
            let lower = if i == 0 { 0f64.min(upper) } else { bounds[i - 1] };
            return lower + (upper - lower) * ((rank - below as f64) / c as f64);
        }
        below += c;
    }
    bounds.last().copied().unwrap_or(f64::NAN)
}

fn minus(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| x.saturating_sub(*y)).collect()
}

impl Sampler {
    /// Reads every series of `families` once.
    pub(crate) fn sample(&mut self, families: &[&'static Family]) {
        let started = *self.started.get_or_insert_with(Instant::now);
        let t = started.elapsed().as_secs_f64();
        let previous = self.last.replace(t);
        for f in families {
            let kind = f.def().kind;
            for s in f.snapshot() {
                let k = key(s);
                if !self.series.contains_key(&k) && self.series.len() >= MAX_SERIES {
                    continue;
                }
                let h = self.series.entry(k).or_insert_with(|| {
                    // Allocated once at their bound (a growing deque would double past it).
                    let mut h = History {
                        points: VecDeque::with_capacity(POINTS + 1),
                        buckets: VecDeque::with_capacity(if kind == MetricKind::Histogram { WINDOW + 1 } else { 0 }),
                    };
                    // A counter or histogram that appeared since the last reading was at zero
                    // then: what it counted is recent.
                    if let Some(at) = previous.filter(|_| kind != MetricKind::Gauge) {
                        h.points.push_back(Point { t: at, v: 0.0, q: [f32::NAN; 3] });
                        if let Some((_, counts)) = buckets(s) {
                            h.buckets.push_back(vec![0; counts.len()]);
                        }
                    }
                    h
                });
                let point = match (kind, buckets(s)) {
                    (MetricKind::Histogram, Some((bounds, counts))) => {
                        // Without a reading before, the interval is unknown: no percentiles.
                        let q = match h.buckets.back() {
                            Some(prev) => {
                                let delta = minus(&counts, prev);
                                QUANTILES.map(|q| quantile(q, bounds, &delta) as f32)
                            }
                            None => [f32::NAN; 3],
                        };
                        let count = counts.iter().sum::<u64>() as f64;
                        h.buckets.push_back(counts);
                        if h.buckets.len() > WINDOW {
                            h.buckets.pop_front();
                        }
                        Point { t, v: count, q }
                    }
                    _ => Point { t, v: s.get().unwrap_or(0.0), q: [f32::NAN; 3] },
                };
                h.points.push_back(point);
                if h.points.len() > POINTS {
                    h.points.pop_front();
                }
            }
        }
    }

    fn now(&self) -> f64 {
        self.started.map_or(0.0, |s| s.elapsed().as_secs_f64())
    }

    /// A histogram series' per-bucket counts observed over about the last minute (from its
    /// oldest reading in that window to now).
    pub(crate) fn recent_buckets(&self, s: &'static Series) -> Option<Vec<u64>> {
        let first = self.series.get(&key(s))?.buckets.front()?;
        Some(minus(&buckets(s)?.1, first))
    }

    /// The per-second rate of a counter over about the last minute (from its oldest reading in
    /// that window to now); none over less than a second.
    pub(crate) fn recent_rate(&self, s: &'static Series) -> Option<f64> {
        let h = self.series.get(&key(s))?;
        let first = h.points.get(h.points.len().saturating_sub(WINDOW))?;
        let dt = self.now() - first.t;
        let now = s.get()?;
        (dt >= 1.0).then(|| (now - first.v).max(0.0) / dt)
    }

    /// The memory the histories hold.
    pub(crate) fn bytes(&self) -> usize {
        self.series
            .values()
            .map(|h| {
                size_of::<(usize, History)>()
                    + h.points.capacity() * size_of::<Point>()
                    + h.buckets.iter().map(|b| b.capacity() * 8 + size_of::<Vec<u64>>()).sum::<usize>()
            })
            .sum()
    }

    pub(crate) fn history(&self, s: &'static Series) -> Option<&History> {
        self.series.get(&key(s))
    }
}

/// The sampler, read by the pages.
pub(crate) static SAMPLER: Mutex<Option<Sampler>> = Mutex::new(None);

/// Starts the thread that reads the registry every [`EVERY`] (once).
pub(crate) fn start() {
    let mut s = super::store::lock(&SAMPLER);
    if s.is_some() {
        return;
    }
    *s = Some(Sampler::default());
    drop(s);
    let spawned = std::thread::Builder::new().name("obs-viewer".into()).spawn(|| {
        loop {
            let families = crate::metrics::registry().families();
            if let Some(s) = super::store::lock(&SAMPLER).as_mut() {
                s.sample(&families);
            }
            std::thread::sleep(EVERY);
        }
    });
    if let Err(error) = spawned {
        tracing::warn!(target: "obs", %error, "the viewer cannot sample metrics: its charts stay empty");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static HIST: crate::metrics::MetricDef = crate::metrics::MetricDef {
        name: "viewer_test_duration_seconds",
        help: "A histogram of the viewer's test.",
        kind: MetricKind::Histogram,
        labels: &["route"],
        buckets: &[0.1, 1.0],
        series_cap: 0,
    };

    #[test]
    fn a_series_that_appears_between_readings_counts_from_zero() {
        let family = crate::metrics::registry().family(&HIST);
        let mut sampler = Sampler::default();
        let old = family.series_for(&["/old"]);
        old.observe(0.05);
        // `/old` was there before the first reading: counted from it on.
        sampler.sample(&[family]);
        old.observe(0.5);
        let new = family.series_for(&["/new"]);
        for x in [0.05, 0.5, 5.0] {
            new.observe(x);
        }
        assert_eq!(sampler.recent_buckets(old), Some(vec![0, 1, 0]), "what came after its first reading");
        assert_eq!(sampler.recent_buckets(new), None, "not read yet");
        sampler.sample(&[family]);
        sampler.sample(&[family]);
        assert_eq!(sampler.recent_buckets(new), Some(vec![1, 1, 1]), "all of it, counted from zero");
        let h = sampler.history(new).unwrap();
        assert_eq!(h.points.len(), 3, "the zero at the reading before, then its own");
        assert_eq!((h.points[0].v, h.points[1].v, h.points[2].v), (0.0, 3.0, 3.0));
        assert!(h.points[2].q[0].is_nan(), "nothing observed in the last interval");
        assert!(
            (h.points[1].q[0] - 0.55).abs() < 1e-6,
            "its median over the interval, interpolated in (0.1, 1]: {:?}",
            h.points[1].q
        );
    }

    #[test]
    fn quantiles_interpolate_within_buckets_as_prometheus_does() {
        let bounds = [0.1, 0.5, 1.0];
        // 10 in (0, 0.1], 10 in (0.1, 0.5], none above.
        let counts = [10, 10, 0, 0];
        assert!((quantile(0.5, &bounds, &counts) - 0.1).abs() < 1e-12);
        assert!((quantile(0.75, &bounds, &counts) - 0.3).abs() < 1e-12);
        assert!((quantile(0.25, &bounds, &counts) - 0.05).abs() < 1e-12);
        assert!(quantile(0.5, &bounds, &[0, 0, 0, 0]).is_nan());
        assert_eq!(quantile(0.99, &bounds, &[0, 0, 0, 5]), 1.0, "+Inf: the highest finite bound");
    }
}
