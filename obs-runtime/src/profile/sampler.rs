//! The sampler: one thread that owns the process's only pprof profiler, runs it in windows
//! (a profile asked for, or the continuous upload interval) and hands each window's stacks to
//! whoever waits for them.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// The longest profile [`take`] accepts.
pub const MAX_DURATION: Duration = crate::config::MAX_PROFILE_DURATION;
/// The highest sampling frequency accepted, in Hz.
pub const MAX_FREQUENCY: u32 = 1000;

/// What to sample: how long, how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileRequest {
    pub(crate) duration: Duration,
    pub(crate) frequency: u32,
}

impl ProfileRequest {
    /// Samples for `duration` at 100 Hz.
    pub fn new(duration: Duration) -> ProfileRequest {
        ProfileRequest { duration, frequency: 100 }
    }

    /// Samples at `hz` times a second (1 to 1000).
    pub fn frequency(mut self, hz: u32) -> ProfileRequest {
        self.frequency = hz;
        self
    }
}

/// How a [`Profile`] is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The pprof protobuf (`go tool pprof`, Pyroscope, Speedscope), uncompressed.
    Pprof,
    /// An interactive SVG flamegraph.
    Flamegraph,
}

/// Why no profile was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileError {
    /// Another profile is being taken; one runs at a time.
    Busy,
    /// The duration is zero or longer than the maximum.
    Duration {
        /// What was asked.
        requested: Duration,
        /// The longest accepted.
        max: Duration,
    },
    /// The frequency is not between 1 and [`MAX_FREQUENCY`] Hz.
    Frequency(u32),
    /// The process is shutting down.
    Stopped,
    /// The profiler could not start (for instance another pprof profiler runs in the process).
    Sampler(String),
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProfileError::Busy => {
                write!(f, "another profile is being taken; one runs at a time, try again when it ends")
            }
            ProfileError::Duration { requested, max } => write!(
                f,
                "a profile lasts from 1 second to {} seconds; {:.3} seconds were asked",
                max.as_secs(),
                requested.as_secs_f64()
            ),
            ProfileError::Frequency(hz) => {
                write!(f, "the sampling frequency is from 1 to {MAX_FREQUENCY} Hz; {hz} Hz was asked")
            }
            ProfileError::Stopped => write!(f, "the profiler stopped: the process is shutting down"),
            ProfileError::Sampler(e) => write!(f, "the profiler could not sample: {e}"),
        }
    }
}

impl std::error::Error for ProfileError {}

/// One stack and how many samples hit it.
#[derive(Debug, Clone)]
pub(crate) struct Stack {
    /// Function names, root first.
    pub(crate) frames: Vec<String>,
    pub(crate) thread: String,
    /// The endpoint or task the sample was taken in.
    pub(crate) label: Option<(&'static str, String)>,
    /// The sampled local root span the sample was taken in (HTTP server span, task span):
    /// Pyroscope's `span_id` sample label.
    pub(crate) span_id: Option<u64>,
    pub(crate) count: i64,
}

/// A CPU profile: the stacks sampled over a window.
#[derive(Debug, Clone)]
pub struct Profile {
    pub(crate) stacks: Vec<Stack>,
    pub(crate) frequency: u32,
    pub(crate) start: SystemTime,
    pub(crate) duration: Duration,
}

impl Profile {
    /// How many samples it holds (at 100 Hz, one per 10 ms of CPU).
    pub fn samples(&self) -> u64 {
        self.stacks.iter().map(|s| s.count as u64).sum()
    }

    /// The sampling frequency, in Hz.
    pub fn frequency(&self) -> u32 {
        self.frequency
    }

    /// How long it sampled (shorter than asked when [`interrupt`]ed).
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The profile as pprof protobuf or an SVG flamegraph.
    pub fn render(&self, format: Format) -> Vec<u8> {
        match format {
            Format::Pprof => self.pprof(true),
            Format::Flamegraph => self.flamegraph(),
        }
    }

    /// The profile split by label (endpoint or task), unlabelled samples under `None`.
    #[cfg_attr(not(feature = "pyroscope"), allow(dead_code))]
    pub(crate) fn by_label(&self) -> Vec<(Option<(&'static str, String)>, Profile)> {
        let mut out: Vec<(Option<(&'static str, String)>, Profile)> = Vec::new();
        for s in &self.stacks {
            let part = match out.iter_mut().find(|(l, _)| *l == s.label) {
                Some((_, p)) => p,
                None => {
                    out.push((s.label.clone(), self.clone_empty()));
                    &mut out.last_mut().expect("just pushed").1
                }
            };
            part.stacks.push(s.clone());
        }
        out
    }

    fn clone_empty(&self) -> Profile {
        Profile { stacks: Vec::new(), frequency: self.frequency, start: self.start, duration: self.duration }
    }

    /// The pprof protobuf; `thread_label` adds each sample's thread name as a label (Pyroscope
    /// would make a series of each thread, so the pushed profiles leave it out).
    pub(crate) fn pprof(&self, thread_label: bool) -> Vec<u8> {
        use pprof::protos::{Function, Label, Line, Location, Message as _, Profile as P, Sample, ValueType};
        let mut strings: Vec<String> = vec![String::new()];
        let mut index = std::collections::HashMap::<String, i64>::new();
        let mut s = |text: &str| -> i64 {
            if let Some(&i) = index.get(text) {
                return i;
            }
            strings.push(text.to_owned());
            index.insert(text.to_owned(), strings.len() as i64 - 1);
            strings.len() as i64 - 1
        };
        let period = 1_000_000_000 / i64::from(self.frequency.max(1));
        let mut functions: Vec<Function> = Vec::new();
        let mut locations: Vec<Location> = Vec::new();
        let mut by_name = std::collections::HashMap::<String, u64>::new();
        let mut samples = Vec::new();
        let (thread_key, samples_s, count_s, cpu_s, ns_s) =
            (s("thread"), s("samples"), s("count"), s("cpu"), s("nanoseconds"));
        for stack in &self.stacks {
            let mut location_id = Vec::with_capacity(stack.frames.len());
            // pprof lists a sample's locations leaf first.
            for name in stack.frames.iter().rev() {
                let id = match by_name.get(name) {
                    Some(&id) => id,
                    None => {
                        let id = functions.len() as u64 + 1;
                        let n = s(name);
                        functions.push(Function { id, name: n, system_name: n, ..Default::default() });
                        locations.push(Location {
                            id,
                            line: vec![Line { function_id: id, ..Default::default() }],
                            ..Default::default()
                        });
                        by_name.insert(name.clone(), id);
                        id
                    }
                };
                location_id.push(id);
            }
            let mut label = Vec::new();
            if thread_label {
                label.push(Label { key: thread_key, str: s(&stack.thread), ..Default::default() });
            }
            if let Some((k, v)) = &stack.label {
                label.push(Label { key: s(k), str: s(v), ..Default::default() });
            }
            // Pyroscope keeps this label apart from the series' (span profiles): its id as the
            // span's `pyroscope.profile.id` attribute spells it, 16 hex digits.
            if let Some(id) = stack.span_id {
                label.push(Label { key: s("span_id"), str: s(&format!("{id:016x}")), ..Default::default() });
            }
            samples.push(Sample { location_id, value: vec![stack.count, stack.count * period], label });
        }
        let start = self.start.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let profile = P {
            sample_type: vec![ValueType { ty: samples_s, unit: count_s }, ValueType { ty: cpu_s, unit: ns_s }],
            sample: samples,
            location: locations,
            function: functions,
            string_table: strings,
            time_nanos: start.as_nanos() as i64,
            duration_nanos: self.duration.as_nanos() as i64,
            period_type: Some(ValueType { ty: cpu_s, unit: ns_s }),
            period,
            ..Default::default()
        };
        profile.encode_to_vec()
    }

    fn flamegraph(&self) -> Vec<u8> {
        let lines: Vec<String> = self
            .stacks
            .iter()
            .map(|s| {
                // `;` separates frames in the folded format: keep it out of names.
                let mut line = s.thread.replace(';', ":");
                for f in &s.frames {
                    line.push(';');
                    line.push_str(&f.replace(';', ":"));
                }
                format!("{line} {}", s.count)
            })
            .collect();
        let mut options = pprof::flamegraph::Options::default();
        options.title = format!(
            "CPU: {} samples at {} Hz over {:.1} s",
            self.samples(),
            self.frequency,
            self.duration.as_secs_f64()
        );
        let mut svg = Vec::new();
        if lines.is_empty()
            || pprof::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut svg).is_err()
        {
            return br#"<svg xmlns="http://www.w3.org/2000/svg" width="600" height="40"><text x="10" y="25">No CPU sample in this window.</text></svg>"#.to_vec();
        }
        svg
    }
}

/// Continuous profiling: windows of `interval`, each handed to `sink`.
pub(crate) struct Continuous {
    pub(crate) frequency: u32,
    pub(crate) interval: Duration,
    pub(crate) sink: Box<dyn FnMut(Profile) + Send>,
    /// Called once at shutdown with the deadline; `true` if everything was pushed by then.
    pub(crate) flush: Box<dyn FnOnce(Instant) -> bool + Send>,
}

enum Reply {
    Sync(mpsc::SyncSender<Result<Profile, ProfileError>>),
    Async(futures_channel::oneshot::Sender<Result<Profile, ProfileError>>),
}

impl Reply {
    /// Whether the requester stopped waiting (an async one whose future was dropped).
    fn is_canceled(&self) -> bool {
        match self {
            Reply::Sync(_) => false,
            Reply::Async(tx) => tx.is_canceled(),
        }
    }

    /// Refuses without touching `busy`, which belongs to the request being served.
    fn send_busy(self) {
        self.deliver(Err(ProfileError::Busy));
    }

    /// Answers the request being served, and frees the profiler.
    fn send(self, r: Result<Profile, ProfileError>) {
        // Free first: whoever receives this may ask for the next profile at once.
        if let Some(h) = SAMPLER.get() {
            h.busy.store(false, Ordering::Release);
        }
        self.deliver(r);
    }

    fn deliver(self, r: Result<Profile, ProfileError>) {
        match self {
            Reply::Sync(tx) => drop(tx.send(r)),
            Reply::Async(tx) => drop(tx.send(r)),
        }
    }
}

enum Command {
    Take(ProfileRequest, Reply),
    Interrupt,
    /// Stop by the deadline; the reply says whether every profile was pushed.
    Shutdown(Instant, mpsc::Sender<bool>),
}

struct Handle {
    tx: Mutex<mpsc::Sender<Command>>,
    busy: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

static SAMPLER: OnceLock<Handle> = OnceLock::new();
/// Set by [`interrupt`] and at shutdown: profiles asked for from then on are refused.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Starts the sampler thread (with continuous profiling, if given); the first call wins.
pub(crate) fn start(continuous: Option<Continuous>) -> bool {
    let mut started = false;
    SAMPLER.get_or_init(|| {
        started = true;
        crate::profile::enable_labels();
        // Span ids go onto samples only where profiles reach Pyroscope, whose span profiles read
        // them: not for profiles taken on demand.
        if continuous.is_some() {
            crate::profile::enable_span_ids();
        }
        let (tx, rx) = mpsc::channel();
        // Without its thread the channel is closed, and every profile fails with an error.
        let thread = std::thread::Builder::new()
            .name("obs-profiler".into())
            .spawn(move || {
                // Whatever ends the loop (a panic included), the profiler is not busy any more:
                // later profiles fail with an error instead of `Busy` forever.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(rx, continuous)));
                if let Some(h) = SAMPLER.get() {
                    h.busy.store(false, Ordering::Release);
                }
            })
            .ok();
        Handle { tx: Mutex::new(tx), busy: AtomicBool::new(false), thread: Mutex::new(thread) }
    });
    started
}

/// Asks the sampler to stop: the window running ends, continuous profiling pushes it and what
/// is queued before `deadline`. Wait with [`shutdown_wait`].
pub(crate) fn shutdown_begin(deadline: Instant) -> Option<mpsc::Receiver<bool>> {
    CLOSED.store(true, Ordering::Release);
    let h = SAMPLER.get()?;
    let (done_tx, done_rx) = mpsc::channel();
    h.tx.lock().unwrap_or_else(|e| e.into_inner()).send(Command::Shutdown(deadline, done_tx)).ok()?;
    Some(done_rx)
}

/// Waits for the sampler to stop, until `deadline`; `true` if it did and every profile was
/// pushed.
pub(crate) fn shutdown_wait(done: Option<mpsc::Receiver<bool>>, deadline: Instant) -> bool {
    let Some(done) = done else { return true };
    let left = deadline.saturating_duration_since(Instant::now());
    let (stopped, pushed) = match done.recv_timeout(left) {
        Ok(pushed) => (true, pushed),
        Err(_) => (false, false),
    };
    if stopped
        && let Some(h) = SAMPLER.get()
        && let Some(t) = h.thread.lock().unwrap_or_else(|e| e.into_inner()).take()
    {
        let _ = t.join();
    }
    pushed
}

fn check(req: &ProfileRequest) -> Result<(), ProfileError> {
    if req.duration < Duration::from_secs(1) || req.duration > MAX_DURATION {
        return Err(ProfileError::Duration { requested: req.duration, max: MAX_DURATION });
    }
    if req.frequency == 0 || req.frequency > MAX_FREQUENCY {
        return Err(ProfileError::Frequency(req.frequency));
    }
    Ok(())
}

fn submit(req: ProfileRequest, reply: impl FnOnce() -> Reply) -> Result<(), ProfileError> {
    check(&req)?;
    if CLOSED.load(Ordering::Acquire) {
        return Err(ProfileError::Stopped);
    }
    start(None);
    let h = SAMPLER.get().expect("started");
    if h.busy.swap(true, Ordering::AcqRel) {
        return Err(ProfileError::Busy);
    }
    if h.tx.lock().unwrap_or_else(|e| e.into_inner()).send(Command::Take(req, reply())).is_err() {
        h.busy.store(false, Ordering::Release);
        return Err(if CLOSED.load(Ordering::Acquire) {
            ProfileError::Stopped
        } else {
            ProfileError::Sampler("the profiler thread is not running".into())
        });
    }
    Ok(())
}

/// Samples the whole process for `req`'s duration and returns the profile; blocks meanwhile.
///
/// One profile runs at a time ([`ProfileError::Busy`] otherwise). With continuous profiling
/// on, the profile is one of its windows: it is pushed to Pyroscope as well.
pub fn take(req: ProfileRequest) -> Result<Profile, ProfileError> {
    let (tx, rx) = mpsc::sync_channel(1);
    submit(req, || Reply::Sync(tx))?;
    rx.recv().unwrap_or(Err(ProfileError::Stopped))
}

/// For a service's shutdown signal: ends the profile being taken now (its requester gets what
/// was sampled so far, with its real duration) and refuses later ones
/// ([`ProfileError::Stopped`]), so that no profile holds the graceful shutdown of an HTTP
/// server. Continuous profiling goes on (its current window ends early) until the guard is
/// dropped.
pub fn interrupt() {
    CLOSED.store(true, Ordering::Release);
    if let Some(h) = SAMPLER.get() {
        let _ = h.tx.lock().unwrap_or_else(|e| e.into_inner()).send(Command::Interrupt);
    }
}

/// [`take`] without blocking the thread: for async handlers. Dropping the future ends the
/// profile (within 0.2 s), so a client that goes away does not keep the profiler busy.
pub async fn take_async(req: ProfileRequest) -> Result<Profile, ProfileError> {
    let (tx, rx) = futures_channel::oneshot::channel();
    submit(req, || Reply::Async(tx))?;
    rx.await.unwrap_or(Err(ProfileError::Stopped))
}

/// The sampler thread: takes requested profiles one at a time, and between them (when
/// configured) the continuous ones.
///
/// Long on purpose: one loop over the thread's state (the pending request, the continuous
/// window, the warning said once), which every branch reads and changes.
fn run(rx: mpsc::Receiver<Command>, mut continuous: Option<Continuous>) {
    let mut pending: Option<(ProfileRequest, Reply)> = None;
    let mut warned = false;
    loop {
        if pending.is_none() && continuous.is_none() {
            match rx.recv() {
                Ok(Command::Take(req, reply)) => pending = Some((req, reply)),
                Ok(Command::Interrupt) => continue,
                Ok(Command::Shutdown(_, done)) => {
                    // Nothing continuous, nothing left to push.
                    let _ = done.send(true);
                    return;
                }
                Err(_) => return,
            }
        }
        let (frequency, length) = match (&pending, &continuous) {
            (Some((req, _)), _) => (req.frequency, req.duration),
            (None, Some(c)) => (c.frequency, c.interval),
            (None, None) => unreachable!("waited above"),
        };
        let for_request = pending.is_some();
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(frequency as i32)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build();
        let guard = match guard {
            Ok(g) => {
                if std::mem::take(&mut warned) {
                    tracing::info!(target: "obs", "the CPU profiler works again");
                }
                g
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(target: "obs", error = %e, "the CPU profiler cannot start; profiles fail until it can");
                    warned = true;
                }
                if let Some((_, reply)) = pending.take() {
                    reply.send(Err(ProfileError::Sampler(e.to_string())));
                }
                if let Some(c) = &continuous {
                    // Retry at the next window rather than spinning; requests and shutdown are
                    // still served meanwhile.
                    match rx.recv_timeout(c.interval) {
                        Ok(Command::Take(req, reply)) => pending = Some((req, reply)),
                        Ok(Command::Shutdown(deadline, done)) => {
                            stop(&mut continuous, None, deadline, done);
                            return;
                        }
                        Ok(Command::Interrupt) | Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                continue;
            }
        };
        let start = SystemTime::now();
        let began = Instant::now();
        let end = began + length;
        let mut stopping = None;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            // Short steps, to notice a requester that went away.
            match rx.recv_timeout((end - now).min(Duration::from_millis(200))) {
                Err(RecvTimeoutError::Timeout) => {
                    if for_request && pending.as_ref().is_some_and(|(_, r)| r.is_canceled()) {
                        if let Some((_, reply)) = pending.take() {
                            reply.send(Err(ProfileError::Stopped));
                        }
                        break;
                    }
                }
                // A request while a continuous window runs ends it; the request gets a window of
                // its own. During a request's window another one is refused (one at a time).
                Ok(Command::Take(req, reply)) => {
                    if pending.is_none() {
                        pending = Some((req, reply));
                        break;
                    }
                    reply.send_busy();
                }
                Ok(Command::Interrupt) => break,
                Ok(Command::Shutdown(deadline, done)) => {
                    stopping = Some((deadline, done));
                    break;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let profile = collect(&guard, frequency, start, began.elapsed());
        drop(guard);
        if let Some((deadline, done)) = stopping {
            if let (Some(c), Ok(p)) = (&mut continuous, &profile) {
                (c.sink)(p.clone());
            }
            stop(&mut continuous, pending.take(), deadline, done);
            return;
        }
        if for_request && let Some((_, reply)) = pending.take() {
            reply.send(profile.clone());
        }
        if let (Some(c), Ok(p)) = (&mut continuous, profile) {
            (c.sink)(p);
        }
    }
}

fn stop(
    continuous: &mut Option<Continuous>,
    pending: Option<(ProfileRequest, Reply)>,
    deadline: Instant,
    done: mpsc::Sender<bool>,
) {
    if let Some((_, reply)) = pending {
        reply.send(Err(ProfileError::Stopped));
    }
    let pushed = match continuous.take() {
        Some(Continuous { sink, flush, .. }) => {
            // The sink holds the pusher's queue open: close it first.
            drop(sink);
            flush(deadline)
        }
        None => true,
    };
    let _ = done.send(pushed);
}

/// The window's stacks, with the profiler's own frames removed and label frames named.
fn collect(
    guard: &pprof::ProfilerGuard<'_>,
    frequency: u32,
    start: SystemTime,
    duration: Duration,
) -> Result<Profile, ProfileError> {
    let report = guard.report().build().map_err(|e| ProfileError::Sampler(e.to_string()))?;
    let mut stacks = Vec::with_capacity(report.data.len());
    for (frames, &count) in &report.data {
        // Leaf first, inlined functions innermost first.
        let mut names: Vec<String> = frames.frames.iter().flat_map(|f| f.iter().map(|s| s.name())).collect();
        // The unwinder, the signal handler and the kernel's signal trampoline sit on top of the
        // interrupted code: everything up to the trampoline goes (the first one from the leaf,
        // so that the profiler thread's own pprof frames further down stay).
        match names.iter().position(|n| n == "__restore_rt" || n == "__kernel_rt_sigreturn") {
            Some(at) => drop(names.drain(..=at)),
            None => {
                let ours = names
                    .iter()
                    .take_while(|n| {
                        n.starts_with("pprof::") || n.starts_with("backtrace::") || n.contains("perf_signal_handler")
                    })
                    .count();
                drop(names.drain(..ours));
            }
        }
        let span_id = crate::profile::span_in_stack(&mut names);
        let mut label = None;
        for n in names.iter_mut() {
            if let Some(slot) = crate::profile::slot_in_symbol(n)
                && let Some((k, v)) = crate::profile::label_of(slot)
            {
                *n = format!("{k}: {v}");
                label = Some((k, v));
                break;
            }
        }
        names.reverse();
        stacks.push(Stack { frames: names, thread: frames.thread_name_or_id(), label, span_id, count: count as i64 });
    }
    Ok(Profile { stacks, frequency, start, duration })
}
