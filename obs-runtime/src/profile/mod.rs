//! CPU profiling: profiles on demand and, with the `pyroscope` feature, continuous profiles
//! pushed to Grafana Pyroscope. Every sample taken while the [HTTP layer](crate::http) or a
//! [task](crate::task) polls its work carries the endpoint (route template) or task name, as a
//! pprof label and as a frame of the flamegraph, so a profile can be filtered by endpoint.
//!
//! Sampling uses [pprof-rs](https://docs.rs/pprof) (`SIGPROF` at a fixed frequency, stacks
//! unwound in the signal handler). Nothing samples until a profile is asked for, or continuous
//! profiling is on. With the `profiling` feature:
//!
//! ```no_run
//! # #[cfg(feature = "profiling")] {
//! use std::time::Duration;
//! use obs_runtime::profile::{self, Format, ProfileRequest};
//!
//! let profile = profile::take(ProfileRequest::new(Duration::from_secs(10))).expect("no other profile running");
//! std::fs::write("cpu.pb", profile.render(Format::Pprof)).unwrap();       // go tool pprof cpu.pb
//! std::fs::write("cpu.svg", profile.render(Format::Flamegraph)).unwrap(); // open in a browser
//! # }
//! ```
//!
//! With `axum` too, [`router`] serves the same over HTTP (Go's `/debug/pprof/profile` path,
//! so `go tool pprof http://host/debug/pprof/profile?seconds=30` works).
//!
//! # How labels reach the samples
//! A sample is a stack taken in a signal handler: it cannot carry a value that is not on the
//! stack. So the HTTP layer and the task wrapper run each poll through one of 63 distinct
//! functions, one per label (route template or task name, first come first served; later ones
//! go unlabelled). The profiler finds that frame in each stack and turns it back into the label.
//! The cost is one indirect call per poll, and only while labels are on (once profiling has
//! been used in the process).

#[cfg(all(feature = "profiling", feature = "axum"))]
mod http;
#[cfg(feature = "pyroscope")]
pub(crate) mod push;
#[cfg(feature = "profiling")]
mod sampler;
mod slots;

use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(all(feature = "profiling", feature = "axum"))]
pub use http::{EndpointSettings, router};
#[cfg(feature = "pyroscope")]
pub(crate) use sampler::start;
#[cfg(feature = "profiling")]
pub use sampler::{
    Format, MAX_DURATION, MAX_FREQUENCY, Profile, ProfileError, ProfileRequest, interrupt, take, take_async,
};
#[cfg(feature = "profiling")]
pub(crate) use sampler::{shutdown_begin, shutdown_wait};

/// Whether new request and task contexts get a label slot.
static LABELS_ON: AtomicBool = AtomicBool::new(false);
/// `LABELS[i]` is the label of slot `i`; slot 0 is "no label".
static LABELS: RwLock<Vec<(&'static str, String)>> = RwLock::new(Vec::new());

/// Turns labels on for contexts created from now on.
#[cfg_attr(not(feature = "profiling"), allow(dead_code))]
pub(crate) fn enable_labels() {
    LABELS_ON.store(true, Ordering::Relaxed);
}

/// The slot of label `key=value` (0 when labels are off or all slots are taken).
pub(crate) fn slot_for(key: &'static str, value: &str) -> u8 {
    if !LABELS_ON.load(Ordering::Relaxed) {
        return 0;
    }
    let find = |labels: &[(&'static str, String)]| labels.iter().position(|(k, v)| *k == key && v == value);
    if let Some(i) = find(&LABELS.read().unwrap_or_else(|e| e.into_inner())) {
        return i as u8;
    }
    let mut labels = LABELS.write().unwrap_or_else(|e| e.into_inner());
    if labels.is_empty() {
        labels.push(("", String::new()));
    }
    if let Some(i) = find(&labels) {
        return i as u8;
    }
    if labels.len() >= slots::SLOTS.len() {
        return 0;
    }
    labels.push((key, value.to_owned()));
    (labels.len() - 1) as u8
}

/// The label of slot `slot`.
#[cfg_attr(not(feature = "profiling"), allow(dead_code))]
pub(crate) fn label_of(slot: usize) -> Option<(&'static str, String)> {
    let labels = LABELS.read().unwrap_or_else(|e| e.into_inner());
    labels.get(slot).filter(|_| slot > 0).cloned()
}

/// Runs `f` with the frame of `slot` on the stack (directly for slot 0).
pub(crate) fn in_slot<R>(slot: u8, f: impl FnOnce() -> R) -> R {
    if slot == 0 {
        return f();
    }
    let mut f = Some(f);
    let mut out = None;
    (slots::SLOTS[slot as usize])(&mut || out = f.take().map(|f| f()));
    out.expect("the slot function calls its closure")
}

/// Whether the samples of sampled local roots carry their span's id: continuous profiling
/// (Pyroscope, whose span profiles read it) is on.
static SPAN_IDS: AtomicBool = AtomicBool::new(false);

#[cfg_attr(not(feature = "pyroscope"), allow(dead_code))]
pub(crate) fn enable_span_ids() {
    SPAN_IDS.store(true, Ordering::Relaxed);
}

/// Whether spans started now spell their id for the profiler (see [`in_span`]).
#[inline]
pub(crate) fn span_ids_on() -> bool {
    SPAN_IDS.load(Ordering::Relaxed)
}

/// Runs `f` with `span_id` spelled on the stack by 16 frames (one per hex digit), so that the
/// samples taken in `f` carry the span (Pyroscope's span profiles).
pub(crate) fn in_span<R>(span_id: u64, f: impl FnOnce() -> R) -> R {
    let mut f = Some(f);
    let mut out = None;
    slots::spell(span_id, &mut || out = f.take().map(|f| f()));
    out.expect("the innermost digit calls the closure")
}

/// The hex digit a span-id frame spells (`…::obs_span_digit_a::h…` → 10).
fn digit_in_symbol(name: &str) -> Option<u64> {
    let at = name.find("obs_span_digit_")? + "obs_span_digit_".len();
    let digit = name[at..].chars().next()?.to_digit(16)?;
    // One character: `obs_span_digit_a` and not some longer name.
    name[at + 1..].chars().next().is_none_or(|c| !c.is_ascii_alphanumeric()).then_some(u64::from(digit))
}

/// Whether a frame is the spelling's helper (`slots::spell`, `slots::spell_next`, inlined into
/// the digits, which debug information names bare or with their path and hash).
fn spelling_helper(name: &str) -> bool {
    let mut segments = name.rsplit("::");
    let mut last = segments.next().unwrap_or_default();
    if last.len() == 17 && last.starts_with('h') && last[1..].chars().all(|c| c.is_ascii_hexdigit()) {
        last = segments.next().unwrap_or_default();
    }
    (last == "spell_next" || last == "spell") && (segments.next().is_none_or(|m| m == "slots"))
}

/// The span spelled in a stack (frames leaf first), and the stack without its spelling frames.
/// A spelling counts only when complete: its end frame (`obs_span_digits_end`, called by the
/// innermost digit) followed by sixteen digits, so a sample taken while a spelling is being
/// built or unwound names no span, nor a mix of two. Nested spellings (a task's root run
/// inside a request's poll) name the innermost complete one: the local root whose code ran.
#[cfg_attr(not(feature = "profiling"), allow(dead_code))]
pub(crate) fn span_in_stack(frames: &mut Vec<String>) -> Option<u64> {
    let spelling = |n: &String| digit_in_symbol(n).is_some() || n.contains("obs_span_digits_end") || spelling_helper(n);
    if !frames.iter().any(spelling) {
        return None;
    }
    let id = frames.iter().enumerate().find_map(|(i, n)| {
        if !n.contains("obs_span_digits_end") {
            return None;
        }
        // Leaf first: after the end frame come the digits, least significant first (with the
        // helper inlined into each, which debug information lists as frames of its own).
        let mut digits = frames[i + 1..].iter().filter(|f| !spelling_helper(f)).map(|f| digit_in_symbol(f));
        let (mut id, mut count) = (0u64, 0);
        for digit in digits.by_ref().take(16) {
            id |= digit? << (4 * count);
            count += 1;
        }
        (count == 16).then_some(id)
    });
    frames.retain(|n| !spelling(n));
    id
}

/// The slot number in a symbol name such as `obs_runtime::profile::slots::obs_profile_slot_17`.
#[cfg_attr(not(feature = "profiling"), allow(dead_code))]
pub(crate) fn slot_in_symbol(name: &str) -> Option<usize> {
    let at = name.find("obs_profile_slot_")? + "obs_profile_slot_".len();
    let digits: String = name[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_get_stable_slots_and_run_through_their_frame() {
        assert_eq!(slot_for("endpoint", "/off"), 0, "off until enabled");
        enable_labels();
        let a = slot_for("endpoint", "/events/{id}");
        let b = slot_for("task", "notify");
        assert!(a > 0 && b > 0 && a != b);
        assert_eq!(slot_for("endpoint", "/events/{id}"), a);
        assert_eq!(label_of(a as usize), Some(("endpoint", "/events/{id}".to_owned())));
        assert_eq!(label_of(0), None);
        assert_eq!(in_slot(a, || 41 + 1), 42);
        assert_eq!(in_slot(0, || "direct"), "direct");
        assert_eq!(slot_in_symbol("obs_runtime::profile::slots::obs_profile_slot_17::h1234"), Some(17));
        assert_eq!(slot_in_symbol("core::ops::function::FnOnce::call_once"), None);
        assert_eq!(in_span(0x0123_4567_89ab_cdef, || "spelled"), "spelled");
        // Past the last slot, labels go unlabelled instead of growing.
        for i in 0..100 {
            let s = slot_for("task", &format!("t{i}"));
            assert!((s as usize) < slots::SLOTS.len());
        }
        assert_eq!(slot_for("task", "one too many"), 0);
    }

    #[test]
    fn a_spelled_span_is_read_back_from_the_stack_and_its_frames_removed() {
        let id = 0x00f0_67aa_0ba9_02b7u64;
        // As pprof-rs gives a stack: leaf first; the spelling's innermost digit is the least
        // significant. A nested spelling of another span sits inside (closer to the leaf).
        let digits = |id: u64| -> Vec<String> {
            (0..16)
                .map(|i| format!("obs_runtime::profile::slots::obs_span_digit_{:x}::h1f2e", (id >> (4 * i)) & 0xF))
                .collect()
        };
        let end = || "obs_runtime::profile::slots::obs_span_digits_end::h99".to_owned();
        let spelled = |id: u64| -> Vec<String> { std::iter::once(end()).chain(digits(id)).collect() };
        let mut frames = vec!["burn_cpu".to_owned()];
        frames.extend(spelled(0xdead_beef));
        frames.push("obs_runtime::profile::in_span".to_owned());
        frames.extend(spelled(id));
        frames.push("tokio::runtime::park".to_owned());
        assert_eq!(span_in_stack(&mut frames), Some(0xdead_beef), "the innermost spelling");
        assert_eq!(frames, ["burn_cpu", "obs_runtime::profile::in_span", "tokio::runtime::park"]);
        let mut plain = vec!["main".to_owned(), "obs_span_digit_options".to_owned()];
        assert_eq!(span_in_stack(&mut plain), None);
        assert_eq!(plain.len(), 2);
        let mut one = spelled(id);
        assert_eq!(span_in_stack(&mut one), Some(id));
        // Debug information lists the inlined helper between the digits, bare or with its path
        // (as pprof-rs named the frames of a debug build in the Pyroscope test).
        let mut bare: Vec<String> =
            ["obs_runtime::profile::slots::obs_span_digits_end", "spell_next", "obs_span_digit_2"]
                .into_iter()
                .map(str::to_owned)
                .chain((0..15).flat_map(|_| ["spell_next".to_owned(), "obs_span_digit_f".to_owned()]))
                .chain(["spell".to_owned(), "obs_runtime::profile::in_span".to_owned()])
                .collect();
        assert_eq!(span_in_stack(&mut bare), Some(0xffff_ffff_ffff_fff2));
        assert_eq!(bare, ["obs_runtime::profile::in_span"]);
        let mut inlined: Vec<String> =
            spelled(id).into_iter().flat_map(|f| [f, "obs_runtime::profile::slots::spell_next".to_owned()]).collect();
        assert_eq!(span_in_stack(&mut inlined), Some(id));
        assert!(inlined.is_empty());
        // A sample taken while an inner spelling is being built, inside a complete outer one:
        // the outer span, not a mix of the two.
        let mut building: Vec<String> = digits(0xdead_beef).into_iter().skip(10).collect();
        building.extend(spelled(id));
        assert_eq!(span_in_stack(&mut building), Some(id));
        assert!(building.is_empty());
        // A stack cut inside the spelling (too deep for the unwinder): no span, no digit frames.
        let mut cut: Vec<String> = spelled(id).into_iter().take(9).collect();
        assert_eq!(span_in_stack(&mut cut), None);
        assert!(cut.is_empty());
    }
}
