//! Standard output and error written by a thread of their own: the request path appends a line to
//! a bounded buffer (a lock and a copy) instead of making a system call per line, and never
//! waits for a slow or blocked terminal or pipe. A full buffer drops lines and counts them in
//! `obs_log_lines_dropped_total`; so does a stream that fails (a broken pipe, any write error).
//!
//! A loss episode shows in the stream itself: a WARN line where the loss starts (in the place of
//! the first line dropped) and one with the count where it ends, in the format of the lines
//! around them. Lines reach the stream whole: the buffer is written in pieces that end at a line
//! boundary and fit a pipe's atomic write (`PIPE_BUF`), so a process that exits while its
//! output is blocked leaves no half line behind; what it could not write is counted.

use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::metrics::Series;

/// Bytes waiting at most, per stream; beyond, lines are dropped (and counted).
const CAPACITY: usize = 4 << 20;
/// The writer wakes at least this often while lines come in; once a whole interval passed
/// without one, it sleeps until the next line.
const INTERVAL: Duration = Duration::from_millis(50);
/// ... and as soon as this much waits.
const WAKE_AT: usize = 64 << 10;
/// The most one `write` takes: what a pipe writes atomically (POSIX `PIPE_BUF` on Linux), so
/// that a write is all or nothing; a longer line is written on its own.
const ATOMIC_WRITE: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

struct State {
    buf: Vec<u8>,
    /// Bytes handed to the stream so far, and bytes appended so far (for `flush`).
    written: u64,
    appended: u64,
    /// The writer sleeps without a timeout: the next line wakes it.
    idle: bool,
    /// Lines dropped in the loss episode going on (0: none).
    lost: u64,
    /// When it started.
    lost_since: Option<std::time::SystemTime>,
    /// Lines taken out of `buf` by the writer and not yet handed to the stream.
    in_flight: u64,
    /// Lines in `buf` (counted as they are appended: the buffer is never scanned for them).
    lines: u64,
    /// The process gave up on the stream at exit ([`Writer::abandon`]): what waits was counted as
    /// dropped, and is not written (nor counted again).
    abandoned: bool,
}

pub(crate) struct Writer {
    stream: Stream,
    state: Mutex<State>,
    more: Condvar,
    done: Condvar,
    dropped: &'static Series,
}

static OUT: OnceLock<&'static Writer> = OnceLock::new();
static ERR: OnceLock<&'static Writer> = OnceLock::new();

fn cell(stream: Stream) -> &'static OnceLock<&'static Writer> {
    if stream == Stream::Stdout { &OUT } else { &ERR }
}

impl Writer {
    fn get(stream: Stream) -> &'static Writer {
        cell(stream).get_or_init(|| {
            let w: &'static Writer = Box::leak(Box::new(Writer {
                stream,
                state: Mutex::new(State {
                    buf: Vec::new(),
                    written: 0,
                    appended: 0,
                    idle: false,
                    lost: 0,
                    lost_since: None,
                    in_flight: 0,
                    lines: 0,
                    abandoned: false,
                }),
                more: Condvar::new(),
                done: Condvar::new(),
                dropped: crate::metrics::registry().family(&crate::metrics::own::LOG_LINES_DROPPED).series_for(&[]),
            }));
            let spawned = std::thread::Builder::new().name("obs-log-writer".into()).spawn(move || w.run());
            if spawned.is_err() {
                // No thread: lines are written by the callers (see `append`).
                w.state.lock().unwrap_or_else(|e| e.into_inner()).appended = u64::MAX;
            }
            w
        })
    }

    /// Appends a line (never blocks on the stream).
    pub(crate) fn append(stream: Stream, line: &[u8]) {
        let w = Writer::get(stream);
        let mut s = w.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.appended == u64::MAX {
            drop(s);
            return w.write(line);
        }
        if s.buf.len() + line.len() > CAPACITY {
            if s.lost == 0 {
                // The loss starts: said where the first line would have been (a notice may
                // exceed the capacity by its own few hundred bytes).
                let now = std::time::SystemTime::now();
                s.lost_since = Some(now);
                let notice = notice(line, None, now);
                s.buf.extend_from_slice(&notice);
                s.appended += notice.len() as u64;
                s.lines += 1;
            }
            s.lost += 1;
            drop(s);
            w.dropped.inc();
            return;
        }
        if s.lost > 0 {
            // The loss ends: how many lines, since when.
            let since = s.lost_since.take().unwrap_or_else(std::time::SystemTime::now);
            let notice = notice(line, Some(std::mem::take(&mut s.lost)), since);
            s.buf.extend_from_slice(&notice);
            s.appended += notice.len() as u64;
            s.lines += 1;
        }
        s.buf.extend_from_slice(line);
        s.appended += line.len() as u64;
        s.lines += 1;
        if s.idle {
            s.idle = false;
            w.more.notify_one();
        } else if s.buf.len() >= WAKE_AT {
            w.more.notify_one();
        }
    }

    /// Writes a line at once, by the calling thread (a failed write is counted as dropped).
    pub(crate) fn write_now(stream: Stream, line: &[u8]) {
        Writer::get(stream).write(line)
    }

    fn write(&self, bytes: &[u8]) {
        // A closed stream must not take the service down: the lines are lost, and counted.
        let written = match self.stream {
            Stream::Stdout => write_lines(&mut std::io::stdout().lock(), bytes, |_, _| true),
            Stream::Stderr => write_lines(&mut std::io::stderr().lock(), bytes, |_, _| true),
        };
        let lost = lines_in(&bytes[written..]);
        if lost > 0 {
            self.dropped.inc_by_u64(lost);
        }
    }

    /// The writer thread's write: progress is published as it goes, so that `flush` knows, when
    /// its deadline passes, how many lines never reached the stream. Returns the bytes published.
    fn write_tracked(&self, bytes: &[u8]) -> u64 {
        let reported = std::cell::Cell::new(0u64);
        let progress = |n: usize, lines: u64| {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.written += n as u64;
            s.in_flight = s.in_flight.saturating_sub(lines);
            reported.set(reported.get() + n as u64);
            self.done.notify_all();
            !s.abandoned
        };
        let written = match self.stream {
            Stream::Stdout => write_lines(&mut std::io::stdout().lock(), bytes, progress),
            Stream::Stderr => write_lines(&mut std::io::stderr().lock(), bytes, progress),
        };
        // Lines the stream refused are counted, unless they were already (abandoned at exit).
        let abandoned = self.state.lock().unwrap_or_else(|e| e.into_inner()).abandoned;
        let lost = lines_in(&bytes[written..]);
        if lost > 0 && !abandoned {
            self.dropped.inc_by_u64(lost);
        }
        reported.get()
    }

    fn run(&self) {
        let mut out = Vec::new();
        loop {
            {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if s.buf.is_empty() {
                    s = self.more.wait_timeout(s, INTERVAL).unwrap_or_else(|e| e.into_inner()).0;
                }
                // Nothing for a whole interval: sleep until a line (or a flush) comes, instead of
                // waking 20 times a second in an idle service.
                while s.buf.is_empty() {
                    s.idle = true;
                    s = self.more.wait(s).unwrap_or_else(|e| e.into_inner());
                }
                s.idle = false;
                std::mem::swap(&mut s.buf, &mut out);
                if s.abandoned {
                    // Given up on at exit: what comes now is counted, not written.
                    let lost = std::mem::take(&mut s.lines);
                    s.written += out.len() as u64;
                    drop(s);
                    self.dropped.inc_by_u64(lost);
                    out.clear();
                    continue;
                }
                s.in_flight = std::mem::take(&mut s.lines);
            }
            if !out.is_empty() {
                let reported = self.write_tracked(&out);
                let n = out.len() as u64;
                out.clear();
                if out.capacity() > CAPACITY {
                    out = Vec::new();
                }
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                // What the stream refused, or did not take whole, is done with too (counted as
                // dropped): `flush` must not wait for it.
                s.written += n - reported;
                s.in_flight = 0;
                self.done.notify_all();
            }
        }
    }

    /// Waits until what was appended before the call is written, or the deadline passes.
    pub(crate) fn flush(stream: Stream, deadline: Duration) -> bool {
        // Nothing was ever written there.
        let Some(w) = cell(stream).get() else { return true };
        let end = Instant::now() + deadline;
        let mut s = w.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.appended == u64::MAX {
            return true;
        }
        let target = s.appended;
        w.more.notify_one();
        while s.written < target {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = w.done.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }
}

impl Writer {
    /// Counts as dropped the lines still waiting for a blocked stream, at exit, once its last
    /// flush gave up: they will never be written (and none is written in part).
    pub(crate) fn abandon(stream: Stream) {
        let Some(w) = cell(stream).get() else { return };
        let mut s = w.state.lock().unwrap_or_else(|e| e.into_inner());
        if std::mem::replace(&mut s.abandoned, true) {
            return;
        }
        let pending = s.lines + s.in_flight;
        s.lines = 0;
        s.buf.clear();
        drop(s);
        w.dropped.inc_by_u64(pending);
    }
}

/// The line saying a loss started (`lost: None`) or ended, formatted like `like` (a JSON line, or
/// a pretty one).
fn notice(like: &[u8], lost: Option<u64>, since: std::time::SystemTime) -> Vec<u8> {
    let mut at = String::new();
    super::format::rfc3339(&mut at, std::time::SystemTime::now());
    let mut started = String::new();
    super::format::rfc3339(&mut started, since);
    let message = match lost {
        None => "log lines are being dropped: the output is blocked or slower than the service".to_owned(),
        Some(n) => format!("{n} log lines were dropped since {started}: the output is writable again"),
    };
    let counted = "obs_log_lines_dropped_total";
    let line = if like.first() == Some(&b'{') {
        match lost {
            None => format!(
                r#"{{"timestamp":"{at}","level":"WARN","target":"obs","message":"{message}","counted_in":"{counted}"}}"#
            ),
            Some(n) => format!(
                r#"{{"timestamp":"{at}","level":"WARN","target":"obs","message":"{message}","dropped_lines":{n},"since":"{started}","counted_in":"{counted}"}}"#
            ),
        }
    } else {
        format!("{at}  WARN obs: {message} counted_in={counted}")
    };
    let mut line = line.into_bytes();
    line.push(b'\n');
    line
}

/// Writes `bytes` (whole lines) and flushes; returns how many bytes the stream took before it
/// failed. Each `write` is whole lines of at most [`ATOMIC_WRITE`] bytes (a longer line alone),
/// and `progress` is told after each.
/// `progress` returns whether to go on (the stream was not given up on).
fn write_lines(out: &mut impl std::io::Write, bytes: &[u8], mut progress: impl FnMut(usize, u64) -> bool) -> usize {
    let mut done = 0;
    while done < bytes.len() {
        let rest = &bytes[done..];
        let piece = if rest.len() <= ATOMIC_WRITE {
            rest.len()
        } else {
            match rest[..ATOMIC_WRITE].iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                // One long line: alone, whole.
                None => rest.iter().position(|b| *b == b'\n').map_or(rest.len(), |i| i + 1),
            }
        };
        match write_counting(out, &rest[..piece]) {
            n if n == piece => {
                done += n;
                if !progress(n, lines_in(&rest[..piece])) {
                    return bytes.len();
                }
            }
            n => return done + n,
        }
    }
    done
}

/// Writes `bytes` and flushes; returns how many bytes the stream took before it failed.
fn write_counting(out: &mut impl std::io::Write, bytes: &[u8]) -> usize {
    let mut done = 0;
    while done < bytes.len() {
        match out.write(&bytes[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    // Buffered bytes that cannot be flushed are lost as well (only the standard output buffers,
    // and then by line: count them as the last line).
    if done == bytes.len() && out.flush().is_err() {
        return bytes[..done.saturating_sub(1)].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    }
    done
}

/// Lines begun in `bytes` (a cut line counts).
fn lines_in(bytes: &[u8]) -> u64 {
    if bytes.is_empty() {
        return 0;
    }
    // Eight bytes at a time: each byte equal to '\n' becomes exactly 0x80 (no false positive).
    const NL: u64 = 0x0a0a_0a0a_0a0a_0a0a;
    const LOW: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let mut chunks = bytes.chunks_exact(8);
    let mut newlines = 0u64;
    for c in &mut chunks {
        let y = u64::from_ne_bytes(c.try_into().expect("8 bytes")) ^ NL;
        newlines += u64::from((!(((y & LOW) + LOW) | y | LOW)).count_ones());
    }
    newlines += chunks.remainder().iter().filter(|b| **b == b'\n').count() as u64;
    newlines + u64::from(bytes.last() != Some(&b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that takes `room` bytes, then fails.
    struct Closing {
        room: usize,
    }

    impl std::io::Write for Closing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.room).min(7);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_lost_to_a_failing_stream_are_counted() {
        let lines = b"one\ntwo\nthree\n";
        let written = write_counting(&mut Closing { room: 6 }, lines);
        assert_eq!(written, 6);
        // "two" was cut: two lines lost.
        assert_eq!(lines_in(&lines[written..]), 2);
        assert_eq!(lines_in(&lines[write_counting(&mut Closing { room: 100 }, lines)..]), 0);
        assert_eq!(lines_in(&lines[write_counting(&mut Closing { room: 0 }, lines)..]), 3);
        assert_eq!(lines_in(b"no newline"), 1);
        // The word-at-a-time count agrees with a plain one on every byte value and position.
        let mut text: Vec<u8> = (0..=255u8).cycle().take(4099).collect();
        for i in (0..text.len()).step_by(7) {
            text[i] = b'\n';
        }
        for end in 0..text.len() {
            let b = &text[..end];
            let plain =
                b.iter().filter(|c| **c == b'\n').count() as u64 + u64::from(!b.is_empty() && b[end - 1] != b'\n');
            assert_eq!(lines_in(b), plain, "{end}");
        }
    }

    #[test]
    fn an_idle_writer_wakes_for_the_next_line() {
        let w = Writer::get(Stream::Stderr);
        Writer::append(Stream::Stderr, b"obs writer test: before the pause\n");
        // Without a line for a whole interval, the writer sleeps without a timeout.
        let asleep = Instant::now() + Duration::from_secs(10);
        while !w.state.lock().unwrap().idle {
            assert!(Instant::now() < asleep, "the writer never went idle");
            std::thread::sleep(INTERVAL / 5);
        }
        // The next line wakes it (no flush here: a flush would wake it anyway).
        Writer::append(Stream::Stderr, b"obs writer test: after the pause\n");
        let written = Instant::now() + Duration::from_secs(10);
        loop {
            let s = w.state.lock().unwrap();
            if s.written == s.appended {
                break;
            }
            drop(s);
            assert!(Instant::now() < written, "a line appended to an idle writer was not written");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn lines_are_written_in_order_and_flush_waits_for_them() {
        for i in 0..20 {
            Writer::append(Stream::Stderr, format!("obs writer test line {i}\n").as_bytes());
        }
        assert!(Writer::flush(Stream::Stderr, Duration::from_secs(5)));
        let w = cell(Stream::Stderr).get().unwrap();
        let s = w.state.lock().unwrap();
        assert_eq!(s.written, s.appended);
        assert!(s.buf.is_empty());
    }
}
