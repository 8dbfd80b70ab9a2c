//! Exemplars: the latest sampled span that recorded into a counter or a histogram bucket, shown
//! next to the sample in the OpenMetrics exposition (`# {trace_id="…",span_id="…"} value time`),
//! so that a latency panel links to the trace of one request.
//!
//! A series' slots (one for a counter, one per bucket for a histogram) are allocated the first
//! time a sampled span records into it: a series only unsampled calls touch costs one null
//! pointer. Each slot is a sequence lock over atomics: a writer that finds the slot being written
//! by another thread gives up (its exemplar is not needed: the other one is as recent), so
//! recording never waits and never locks; the scrape retries a read that raced a write.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering, fence};

use crate::context::SpanIds;

/// One exemplar, as read by the exposition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Exemplar {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    pub(crate) value: f64,
    /// Wall-clock milliseconds since the Unix epoch.
    pub(crate) time_ms: u64,
}

/// One slot: `seq` is even when the words are consistent, odd while a writer is at them; 0 for
/// a slot never written. A cache line of its own: sampled recordings write it, and it must not
/// share a line with another bucket's slot written by another thread.
#[repr(align(64))]
struct Slot {
    seq: AtomicU64,
    trace_hi: AtomicU64,
    trace_lo: AtomicU64,
    span: AtomicU64,
    value: AtomicU64,
    time_ms: AtomicU64,
}

impl Slot {
    fn empty() -> Slot {
        let zero = || AtomicU64::new(0);
        Slot { seq: zero(), trace_hi: zero(), trace_lo: zero(), span: zero(), value: zero(), time_ms: zero() }
    }

    fn write(&self, value: f64, span: SpanIds, time_ms: u64) {
        let seq = self.seq.load(Ordering::Relaxed);
        // Another thread is writing this slot: its exemplar is as good as ours.
        if seq & 1 == 1 || self.seq.compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return;
        }
        // The odd sequence is visible before any of the words (pairs with the reader's fence).
        fence(Ordering::Release);
        self.trace_hi.store((span.trace_id >> 64) as u64, Ordering::Relaxed);
        self.trace_lo.store(span.trace_id as u64, Ordering::Relaxed);
        self.span.store(span.span_id, Ordering::Relaxed);
        self.value.store(value.to_bits(), Ordering::Relaxed);
        self.time_ms.store(time_ms, Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }

    fn read(&self) -> Option<Exemplar> {
        // A few tries: a write takes nanoseconds; a slot written all the time by other threads
        // may then show no exemplar in this scrape rather than make it wait.
        for _ in 0..16 {
            let seq = self.seq.load(Ordering::Acquire);
            if seq == 0 {
                return None;
            }
            if seq & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let e = Exemplar {
                trace_id: (u128::from(self.trace_hi.load(Ordering::Relaxed)) << 64)
                    | u128::from(self.trace_lo.load(Ordering::Relaxed)),
                span_id: self.span.load(Ordering::Relaxed),
                value: f64::from_bits(self.value.load(Ordering::Relaxed)),
                time_ms: self.time_ms.load(Ordering::Relaxed),
            };
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == seq {
                return Some(e);
            }
        }
        None
    }
}

/// A series' exemplar slots, allocated on first use.
pub(crate) struct Exemplars {
    /// The first of `len` slots (a leaked boxed slice), or null before the first exemplar.
    slots: AtomicPtr<Slot>,
    len: u32,
}

impl Exemplars {
    /// `len` slots: 1 for a counter, one per bucket (`+Inf` included) for a histogram, 0 for a
    /// gauge (OpenMetrics has no exemplars on gauges).
    pub(crate) fn new(len: usize) -> Exemplars {
        Exemplars { slots: AtomicPtr::new(std::ptr::null_mut()), len: len as u32 }
    }

    fn slots(&self) -> Option<&[Slot]> {
        let p = self.slots.load(Ordering::Acquire);
        // SAFETY: a non-null pointer is the start of a leaked `Box<[Slot]>` of `len` slots,
        // never freed (`allocate`).
        (!p.is_null()).then(|| unsafe { std::slice::from_raw_parts(p, self.len as usize) })
    }

    #[cold]
    fn allocate(&self) -> &[Slot] {
        let fresh: Box<[Slot]> = (0..self.len).map(|_| Slot::empty()).collect();
        let fresh = Box::into_raw(fresh) as *mut Slot;
        match self.slots.compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {}
            Err(_) => {
                // Another thread allocated first: ours was never shared.
                // SAFETY: `fresh` came from `Box::into_raw` of a slice of `len` slots just above.
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(fresh, self.len as usize)) });
            }
        }
        self.slots().unwrap_or_default()
    }

    /// Keeps `span` as the exemplar of slot `i` (the latest one wins).
    #[inline(never)]
    pub(crate) fn record(&self, i: usize, value: f64, span: SpanIds) {
        if i >= self.len as usize {
            return;
        }
        let slots = match self.slots() {
            Some(s) => s,
            None => self.allocate(),
        };
        if let Some(slot) = slots.get(i) {
            slot.write(value, span, now_ms());
        }
    }

    /// The exemplar of slot `i`, if one was recorded.
    pub(crate) fn get(&self, i: usize) -> Option<Exemplar> {
        self.slots()?.get(i)?.read()
    }
}

/// Wall-clock milliseconds: the coarse clock on Linux (a few ns to read, a few ms resolution,
/// enough for an exemplar's time), the precise one elsewhere.
fn now_ms() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid clock id and a valid out pointer.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
            return ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000;
        }
    }
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u64) -> SpanIds {
        SpanIds { trace_id: (u128::from(n) << 64) | u128::from(n), span_id: n }
    }

    #[test]
    fn the_latest_exemplar_of_each_slot_is_kept() {
        let e = Exemplars::new(3);
        assert_eq!(e.get(0), None, "nothing before the first sampled recording");
        e.record(1, 0.25, ids(7));
        e.record(1, 0.5, ids(8));
        e.record(3, 1.0, ids(9)); // past the slots: ignored
        assert_eq!(e.get(0), None);
        let got = e.get(1).unwrap();
        assert_eq!((got.trace_id, got.span_id, got.value), (ids(8).trace_id, 8, 0.5));
        assert!(got.time_ms > 1_600_000_000_000, "a wall-clock time: {}", got.time_ms);
        assert_eq!(Exemplars::new(0).get(0), None);
        Exemplars::new(0).record(0, 1.0, ids(1));
    }

    #[test]
    fn a_read_never_mixes_two_writes() {
        // Writers store ids whose words all equal one number; a torn read would mix two.
        let e: &'static Exemplars = Box::leak(Box::new(Exemplars::new(1)));
        let stop = std::sync::atomic::AtomicBool::new(false);
        /// Stops the writers however the reader ends (a failed assertion included).
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        std::thread::scope(|s| {
            for t in 0..2u64 {
                let stop = &stop;
                s.spawn(move || {
                    let mut n = t * 1_000_000_000 + 1;
                    while !stop.load(Ordering::Relaxed) {
                        e.record(0, n as f64, ids(n));
                        n += 1;
                    }
                });
            }
            let _stop = Stop(&stop);
            let mut seen = 0;
            for _ in 0..10_000_000 {
                if let Some(x) = e.get(0) {
                    let n = x.span_id;
                    assert_eq!(x.trace_id, ids(n).trace_id, "torn read");
                    assert_eq!(x.value, n as f64, "torn read");
                    seen += 1;
                    if seen == 20_000 {
                        break;
                    }
                }
            }
            assert!(seen > 0, "no read succeeded");
        });
    }
}
