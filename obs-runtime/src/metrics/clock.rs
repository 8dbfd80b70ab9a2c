//! The clock of `#[timed]`: the CPU's time-stamp counter through `quanta`, once it is calibrated.
//!
//! A timed call reads a clock twice. `std::time::Instant::now` goes through the vDSO's
//! `clock_gettime`: 33 ns on the Intel Xeon and 41 ns on the AMD EPYC the benchmarks ran on,
//! most of what `#[timed]` cost. `quanta`'s raw counter is one `rdtsc` (15 ns on the EPYC),
//! scaled to nanoseconds by a multiply and a shift. Its calibration against the monotonic clock
//! spins for 0.5 to 200 ms, so it runs on a thread of its own, started by `init` (or by the first
//! timed call of a process that never called it); until it is done, timers read
//! `std::time::Instant` as before. Where the counter is not reliable (no invariant TSC or no
//! `rdtscp`), `quanta` itself reads the monotonic clock. A start and an end read on two cores are
//! compared as they are (an invariant TSC is synchronized across cores); an end before its start
//! counts as zero.

use std::sync::OnceLock;
use std::time::Instant;

static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();

/// Calibrates the counter on a thread of its own (once; later calls do nothing).
pub(crate) fn calibrate() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new().name("obs-clock".into()).spawn(|| {
            CLOCK.get_or_init(quanta::Clock::new);
        });
        // Without the thread, timers keep reading `Instant`: slower, not wrong.
        drop(spawned);
    });
}

/// The start of a timed call, on whichever clock was ready at its start.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    #[doc(hidden)]
    Counter(&'static quanta::Clock, u64),
    #[doc(hidden)]
    Std(Instant),
}

impl Start {
    /// Now.
    #[inline(always)]
    pub fn now() -> Start {
        match CLOCK.get() {
            Some(clock) => Start::Counter(clock, clock.raw()),
            None => {
                calibrate();
                Start::Std(Instant::now())
            }
        }
    }

    /// Seconds since the start.
    #[inline(always)]
    pub fn elapsed_seconds(self) -> f64 {
        match self {
            Start::Counter(clock, start) => clock.delta_as_nanos(start, clock.raw()) as f64 * 1e-9,
            Start::Std(start) => start.elapsed().as_secs_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counter is used once calibrated, and measures a sleep of at least 20 ms as at least
    /// that (within its calibration error) and at most what `Instant` measured around it: bounds
    /// that hold however the thread is scheduled.
    #[test]
    fn counter_agrees_with_the_monotonic_clock() {
        calibrate();
        // Calibration spins for at most 200 ms; a minute means the thread never ran.
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        while CLOCK.get().is_none() {
            assert!(Instant::now() < deadline, "the counter was not calibrated within a minute");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let outer = Instant::now();
        let inner = Start::now();
        assert!(matches!(inner, Start::Counter(..)));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let counted = inner.elapsed_seconds();
        let around = outer.elapsed().as_secs_f64();
        assert!(counted >= 0.020 * 0.99, "the counter measured {counted} s for a sleep of 20 ms");
        assert!(counted <= around * 1.01 + 1e-4, "the counter measured {counted} s inside {around} s");
    }
}
