//! Service-level objectives: the recording rules, multi-window multi-burn-rate alerts and
//! promtool unit tests generated from each `[[objective]]` of the monitoring file (the SLO
//! dashboard is in [`crate::dashboards`]).
//!
//! An objective's error ratio is recorded over each window an alert reads (5m to 3d) and over
//! the objective's own window (for the budget left). The alerts follow the SRE workbook
//! ("Alerting on SLOs", multiwindow multi-burn-rate): a page when the budget burns 14.4 times
//! as fast as the window allows over 1h and 5m, or 6 times over 6h and 30m; a ticket at 3 times
//! over 1d and 2h, or 1 time over 3d and 6h. The long window says the burn is significant, the
//! short one that it is still going on, so an alert resolves minutes after the errors stop.

use std::fmt::Write as _;

use crate::spec::{Alert, Monitoring, Objective, Recording, Severity, duration_seconds as seconds};

/// The windows the alerts read, shortest first.
pub const WINDOWS: [&str; 7] = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];

/// One burn-rate condition: the error ratio over `long` and over `short` both above `factor`
/// times the error budget.
#[derive(Debug, Clone, Copy)]
pub struct Burn {
    /// The window that makes the burn significant.
    pub long: &'static str,
    /// The window that shows it is still going on.
    pub short: &'static str,
    /// How many times faster than the objective's window allows.
    pub factor: f64,
}

/// What pages (severity critical): 2 % of a 30-day budget in an hour, or 5 % in 6 hours.
pub const PAGE: [Burn; 2] =
    [Burn { long: "1h", short: "5m", factor: 14.4 }, Burn { long: "6h", short: "30m", factor: 6.0 }];

/// What makes a ticket (severity warning): 10 % of a 30-day budget in a day, or in 3 days.
pub const TICKET: [Burn; 2] =
    [Burn { long: "1d", short: "2h", factor: 3.0 }, Burn { long: "3d", short: "6h", factor: 1.0 }];

/// What an objective counts as good events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sli<'a> {
    /// Events of a counter; `errors` (label matchers) selects the failed ones.
    Success {
        /// Label matchers of the failed events.
        errors: &'a str,
    },
    /// Observations of a histogram; good ones are at most `threshold` seconds (a bucket bound).
    Latency {
        /// The bucket bound.
        threshold: f64,
    },
}

impl Objective {
    /// The kind of objective (validated: exactly one of `errors` and `threshold`).
    pub fn sli(&self) -> Sli<'_> {
        match (&self.errors, self.threshold) {
            (Some(errors), None) => Sli::Success { errors },
            (None, Some(threshold)) => Sli::Latency { threshold },
            _ => unreachable!("validated: `errors` or `threshold`"),
        }
    }

    /// The error budget, `1 - target`, without the binary rounding noise (`0.005`, not
    /// `0.0050000000000000044`).
    pub fn budget(&self) -> f64 {
        round9(1.0 - self.target)
    }

    /// `checkout_availability` → `CheckoutAvailability`, the prefix of its alerts' names.
    pub fn camel_name(&self) -> String {
        self.name
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
            })
            .collect()
    }

    /// The page's alert name.
    pub fn fast_alert(&self) -> String {
        format!("{}ErrorBudgetBurnFast", self.camel_name())
    }

    /// The ticket's alert name.
    pub fn slow_alert(&self) -> String {
        format!("{}ErrorBudgetBurnSlow", self.camel_name())
    }

    /// The series recording the error ratio over `window`.
    pub fn ratio(&self, window: &str) -> String {
        format!("slo:{}:error_ratio_rate{window}", self.name)
    }

    /// `metric{selector}` with `extra` matchers added (the metric alone if there are none).
    fn series(&self, metric: &str, extra: &str) -> String {
        let matchers: Vec<&str> = [self.selector.trim(), extra.trim()].into_iter().filter(|m| !m.is_empty()).collect();
        if matchers.is_empty() { metric.to_owned() } else { format!("{metric}{{{}}}", matchers.join(", ")) }
    }

    /// The share of bad events over `window`.
    ///
    /// No traffic is no ratio: the total is filtered by `> 0`, so a window without events
    /// records nothing (not NaN from 0/0, not 0), and an alert on an absent ratio does not fire.
    /// A success ratio's failures read `or vector(0)`: traffic without a single failure series
    /// yet is a ratio of 0, not an absent one.
    pub fn error_ratio(&self, window: &str) -> String {
        match self.sli() {
            Sli::Success { errors } => format!(
                "(sum(rate({}[{window}])) or vector(0)) / (sum(rate({}[{window}])) > 0)",
                self.series(&self.metric, errors),
                self.series(&self.metric, "")
            ),
            Sli::Latency { threshold } => format!(
                "1 - sum(rate({}[{window}])) / (sum(rate({}[{window}])) > 0)",
                self.series(&format!("{}_bucket", self.metric), &format!("le=~\"{}\"", le_regex(threshold))),
                self.series(&format!("{}_count", self.metric), "")
            ),
        }
    }

    /// The error ratio recorded over each window an alert reads, then over the objective's.
    pub fn recording_rules(&self) -> Vec<Recording> {
        WINDOWS
            .iter()
            .copied()
            .chain([self.window.as_str()])
            .map(|w| Recording { record: self.ratio(w), expr: self.error_ratio(w) })
            .collect()
    }

    /// `(long > (f * budget) and short > (f * budget)) or …` over the recorded ratios.
    pub fn burn_condition(&self, burns: &[Burn]) -> String {
        let budget = decimal(self.budget());
        burns
            .iter()
            .map(|b| {
                let limit = format!("({} * {budget})", decimal(b.factor));
                format!("({} > {limit} and {} > {limit})", self.ratio(b.long), self.ratio(b.short))
            })
            .collect::<Vec<_>>()
            .join(" or ")
    }

    /// The page and the ticket, labelled with the objective.
    pub fn alerts(&self) -> Vec<Alert> {
        let alert = |name: String, severity, burns: &[Burn], pace: &str| Alert {
            name,
            severity,
            expr: self.burn_condition(burns),
            for_: None,
            summary: format!("Objective {}: error budget burning {pace}", self.name),
            description: format!(
                "{} Objective: {} over {}, an error budget of {} of events. {}",
                self.description.trim(),
                percent(self.target),
                self.window_words(),
                percent(self.budget()),
                self.burn_words(burns)
            ),
            labels: vec![("objective".to_owned(), self.name.clone())],
        };
        vec![
            alert(self.fast_alert(), Severity::Critical, &PAGE, "fast"),
            alert(self.slow_alert(), Severity::Warning, &TICKET, "steadily"),
        ]
    }

    /// `28 days`.
    fn window_words(&self) -> String {
        seconds(&self.window).map(duration_words).unwrap_or_else(|| self.window.clone())
    }

    /// What each burn of an alert means for the budget, in one sentence.
    fn burn_words(&self, burns: &[Burn]) -> String {
        let window = seconds(&self.window).expect("validated");
        let parts: Vec<String> = burns
            .iter()
            .map(|b| {
                let long = seconds(b.long).expect("constant");
                let (pace, end) = if b.factor == 1.0 {
                    (
                        "faster than the window allows".to_owned(),
                        "at that pace none is left before the window ends".to_owned(),
                    )
                } else {
                    (
                        format!("more than {} times as fast as the window allows", decimal(b.factor)),
                        format!("all of it in {}", rough_duration(window / b.factor)),
                    )
                };
                format!(
                    "over {} and {} {pace} ({} of the budget in {}; {end})",
                    last(b.long),
                    last(b.short),
                    rough_percent(b.factor * long / window),
                    a_duration(long)
                )
            })
            .collect();
        format!("Bad events burn it {}.", parts.join(", or "))
    }
}

/// The `le` regex of a bucket bound, escaped for a PromQL string (`2(\\.0)?`): `2` matches
/// `le="2"` (the 0.0.4 text format) and `le="2.0"` (OpenMetrics, and Prometheus 3, which
/// normalises `le` values when it scrapes).
pub fn le_regex(bound: f64) -> String {
    let text = decimal(bound);
    if text.contains('.') { text.replace('.', "\\\\.") } else { format!("{text}(\\\\.0)?") }
}

/// `x` with at most 9 decimals and no trailing zeros: `0.005`, `14.4`, `6`.
pub fn decimal(x: f64) -> String {
    let s = format!("{:.9}", round9(x));
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".to_owned() } else { s.to_owned() }
}

/// `x` rounded to 9 decimals.
fn round9(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

/// `0.995` → `99.5 %`, every decimal kept (`99.95 %`).
pub fn percent(share: f64) -> String {
    format!("{} %", decimal(share * 100.0))
}

/// A computed share, one decimal from 1 % on (`2.1 %`, `10 %`), two below (`0.67 %`).
fn rough_percent(share: f64) -> String {
    let p = share * 100.0;
    let text = if p >= 1.0 { format!("{p:.1}") } else { format!("{p:.2}") };
    format!("{} %", text.strip_suffix(".0").unwrap_or(&text))
}

/// `the last hour`, `the last 6 hours`, `the last 5 minutes`.
fn last(window: &str) -> String {
    let words = duration_words(seconds(window).expect("constant"));
    match words.strip_prefix("1 ") {
        Some(unit) => format!("the last {unit}"),
        None => format!("the last {words}"),
    }
}

/// `an hour`, `a day`, `6 hours`.
fn a_duration(seconds: f64) -> String {
    let words = duration_words(seconds);
    match words.strip_prefix("1 ") {
        Some(unit) if unit.starts_with('h') => format!("an {unit}"),
        Some(unit) => format!("a {unit}"),
        None => words,
    }
}

/// A whole number of days, hours or minutes in words (`28 days`, `1 hour`), else seconds.
fn duration_words(seconds: f64) -> String {
    for (unit, len) in [("day", 86400.0), ("hour", 3600.0), ("minute", 60.0)] {
        if seconds >= len && (seconds / len).fract() == 0.0 {
            let n = seconds / len;
            return format!("{n} {unit}{}", if n == 1.0 { "" } else { "s" });
        }
    }
    format!("{} seconds", decimal(seconds))
}

/// A duration to one decimal, in days from a day on, else in hours (`1.9 days`, `9.3 days`).
fn rough_duration(seconds: f64) -> String {
    let (n, unit) = if seconds >= 86400.0 { (seconds / 86400.0, "days") } else { (seconds / 3600.0, "hours") };
    let n = format!("{n:.1}");
    format!("{} {unit}", n.strip_suffix(".0").unwrap_or(&n))
}

/// A promtool `eval_time` of `minutes`: `10m`, `24h`, `7h10m`.
fn eval_time(minutes: u32) -> String {
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m}m"),
    }
}

/// A label matcher: `label op "value"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    /// The label.
    pub label: String,
    /// `=`, `!=`, `=~` or `!~`.
    pub op: MatchOp,
    /// The value or regex, unescaped.
    pub value: String,
}

/// A matcher's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

impl Matcher {
    /// Whether a series whose label has value `v` (empty when it lacks the label) is selected.
    pub fn matches(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::Regex | MatchOp::NotRegex => {
                // Prometheus anchors its regexes; checked to compile when parsed.
                let re = regex::Regex::new(&format!("^(?:{})$", self.value)).expect("validated regex");
                re.is_match(v) == (self.op == MatchOp::Regex)
            }
        }
    }
}

/// Reads comma-separated label matchers (`endpoint="/a", status_code=~"5.."`), the inside of a
/// PromQL selector; an error says what is wrong and where.
pub fn matchers(text: &str) -> Result<Vec<Matcher>, String> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i == b.len() {
            return Ok(out);
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let label = &text[start..i];
        if label.is_empty() || label.as_bytes()[0].is_ascii_digit() {
            return Err(format!("expected a label name at {start} in `{text}`"));
        }
        skip_ws(&mut i);
        let op = match (b.get(i), b.get(i + 1)) {
            (Some(b'='), Some(b'~')) => MatchOp::Regex,
            (Some(b'!'), Some(b'~')) => MatchOp::NotRegex,
            (Some(b'!'), Some(b'=')) => MatchOp::NotEqual,
            (Some(b'='), _) => MatchOp::Equal,
            _ => return Err(format!("expected `=`, `!=`, `=~` or `!~` after `{label}` in `{text}`")),
        };
        i += if op == MatchOp::Equal { 1 } else { 2 };
        skip_ws(&mut i);
        let (value, end) = string(text, i).map_err(|e| format!("the value of `{label}` in `{text}`: {e}"))?;
        i = end;
        if matches!(op, MatchOp::Regex | MatchOp::NotRegex)
            && let Err(e) = regex::Regex::new(&format!("^(?:{value})$"))
        {
            return Err(format!("`{label}`: `{value}` is not a regex: {e}"));
        }
        out.push(Matcher { label: label.to_owned(), op, value });
        skip_ws(&mut i);
        match b.get(i) {
            None => return Ok(out),
            Some(b',') => i += 1,
            Some(_) => return Err(format!("expected `,` between matchers at {i} in `{text}`")),
        }
    }
}

/// The PromQL string literal at `start` of `text` (`"…"` or `'…'` with Go's escapes, or a
/// raw `` `…` ``), unescaped, and the index after it.
fn string(text: &str, start: usize) -> Result<(String, usize), String> {
    let quote = match text[start..].chars().next() {
        Some(q @ ('"' | '\'' | '`')) => q,
        _ => return Err("expected a quoted value".into()),
    };
    let mut out = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            return Ok((out, start + 1 + i + 1));
        }
        if c != '\\' || quote == '`' {
            out.push(c);
            continue;
        }
        match chars.next().map(|(_, e)| e) {
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('\'') => out.push('\''),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(e) => return Err(format!("unknown escape `\\{e}` (write `\\\\` for a backslash)")),
            None => break,
        }
    }
    Err("unclosed string".into())
}

/// Label values the synthetic series of an objective's promtool tests carry besides `job` and
/// `instance`: `(bad, good)`. A bad event's series matches `selector` and `errors`; a good
/// event's matches `selector` and not `errors` (for a latency objective, with no `errors`, the
/// two are the same). An error names the label no value was found for.
pub fn test_labels(selector: &[Matcher], errors: &[Matcher]) -> Result<(Labels, Labels), String> {
    let mut names: Vec<&str> = Vec::new();
    for m in selector.iter().chain(errors) {
        if !names.contains(&m.label.as_str()) {
            names.push(&m.label);
        }
    }
    let on = |ms: &[Matcher], l: &str| ms.iter().filter(|m| m.label == l).cloned().collect::<Vec<_>>();
    let mut bad = Vec::new();
    for l in &names {
        let (s, e) = (on(selector, l), on(errors, l));
        let v = candidates(&s, &e)
            .into_iter()
            .find(|v| s.iter().chain(&e).all(|m| m.matches(v)))
            .ok_or_else(|| {
                format!(
                    "no value of `{l}` found that `selector` and `errors` both match: no failed event would be counted (and the generated promtool tests need one)"
                )
            })?;
        bad.push((l.to_string(), v));
    }
    if errors.is_empty() {
        return Ok((bad.clone(), bad));
    }
    // A good event: the bad one with one `errors` label changed to a value it refuses.
    for (i, (l, _)) in bad.iter().enumerate() {
        let (s, e) = (on(selector, l), on(errors, l));
        if e.is_empty() {
            continue;
        }
        if let Some(v) =
            candidates(&s, &e).into_iter().find(|v| s.iter().all(|m| m.matches(v)) && !e.iter().all(|m| m.matches(v)))
        {
            let mut good = bad.clone();
            good[i].1 = v;
            return Ok((bad, good));
        }
    }
    Err("no label values found for a good event, one that `selector` selects and `errors` does not (the generated promtool tests need one)".into())
}

/// `(label, value)` pairs.
pub type Labels = Vec<(String, String)>;

/// Values to try for a label, most telling first: those the `errors` matchers name or
/// describe, then the selector's, then common ones.
fn candidates(selector: &[Matcher], errors: &[Matcher]) -> Vec<String> {
    let mut out = Vec::new();
    for m in errors.iter().chain(selector) {
        match m.op {
            MatchOp::Equal | MatchOp::NotEqual => out.push(m.value.clone()),
            MatchOp::Regex | MatchOp::NotRegex => out.extend(example(&m.value)),
        }
    }
    out.extend(["200", "500", "ok", "error", "success", "failure", "GET", "other"].map(String::from));
    out
}

/// A string the regex matches whole, read from its syntax: the first branch of each
/// alternation, each repetition its minimum number of times, a printable member of each class.
fn example(pattern: &str) -> Option<String> {
    use regex_syntax::hir::{Class, Hir, HirKind};
    fn walk(h: &Hir, out: &mut String) -> Option<()> {
        match h.kind() {
            HirKind::Empty | HirKind::Look(_) => {}
            HirKind::Literal(l) => out.push_str(std::str::from_utf8(&l.0).ok()?),
            HirKind::Class(Class::Unicode(c)) => {
                let inside = |x: char| c.ranges().iter().any(|r| r.start() <= x && x <= r.end());
                let pick = ['0', 'a', 'x', 'A'].into_iter().find(|&x| inside(x));
                let printable = || (' '..='~').find(|&x| inside(x));
                out.push(pick.or_else(printable).or_else(|| c.ranges().first().map(|r| r.start()))?);
            }
            HirKind::Class(Class::Bytes(_)) => return None,
            HirKind::Repetition(r) => {
                for _ in 0..r.min {
                    walk(&r.sub, out)?;
                }
            }
            HirKind::Capture(c) => walk(&c.sub, out)?,
            HirKind::Concat(hs) => {
                for h in hs {
                    walk(h, out)?;
                }
            }
            HirKind::Alternation(hs) => walk(hs.first()?, out)?,
        }
        Some(())
    }
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    let mut out = String::new();
    walk(&hir, &mut out)?;
    Some(out)
}

/// Events per minute in the synthetic series.
const EVENTS_PER_MINUTE: f64 = 1000.0;

/// A stretch of synthetic traffic: `minutes` long, with `bad` the share of bad events (0 to 1),
/// or no events at all.
#[derive(Debug, Clone, Copy)]
struct Phase {
    minutes: u32,
    bad: Option<f64>,
}

/// Traffic with `bad` the share of bad events, for `minutes`.
fn traffic(minutes: u32, bad: f64) -> Phase {
    Phase { minutes, bad: Some(bad.clamp(0.0, 1.0)) }
}

/// A counter's values one minute apart in promtool's expanding notation, from 0, increasing
/// by `per_minute(phase)` in each phase: `0+5x60 305+1x9`.
fn counter(phases: &[Phase], per_minute: impl Fn(&Phase) -> f64) -> String {
    let mut parts = Vec::new();
    let mut value = 0.0;
    for (i, p) in phases.iter().enumerate() {
        let inc = round9(per_minute(p));
        // The first phase starts with the sample at 0; each next one, one minute after the last.
        let (start, steps) = if i == 0 { (0.0, p.minutes) } else { (round9(value + inc), p.minutes - 1) };
        parts.push(format!("{}+{}x{steps}", decimal(start), decimal(inc)));
        value = round9(start + inc * f64::from(steps));
    }
    parts.join(" ")
}

/// One `input_series` entry: the series (with labels) and its values.
fn input(metric: &str, labels: &[(String, String)], values: &str) -> String {
    let body: Vec<String> = labels.iter().map(|(l, v)| format!("{l}=\"{}\"", escape(v))).collect();
    format!("      - series: {}\n        values: '{values}'\n", quote(&format!("{metric}{{{}}}", body.join(","))))
}

/// A PromQL label value, quoted with `"`.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A single-quoted YAML scalar.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The synthetic series of an objective over `phases`: bad and good events of a counter, or a
/// histogram's bucket at the threshold (good), `+Inf` bucket and count.
fn series(o: &Objective, job: &str, phases: &[Phase]) -> String {
    let total = |p: &Phase| p.bad.map_or(0.0, |_| EVENTS_PER_MINUTE);
    let bad = |p: &Phase| p.bad.map_or(0.0, |b| b * EVENTS_PER_MINUTE);
    let good = |p: &Phase| total(p) - bad(p);
    let (bad_labels, good_labels) = o.test_labels().expect("validated");
    let with = |labels: &Labels, extra: Option<(&str, String)>| {
        let mut all = vec![("job".to_owned(), job.to_owned()), ("instance".to_owned(), "slo-test".to_owned())];
        all.extend(labels.iter().cloned());
        all.extend(extra.map(|(l, v)| (l.to_owned(), v)));
        all
    };
    match o.sli() {
        Sli::Success { .. } => {
            input(&o.metric, &with(&good_labels, None), &counter(phases, good))
                + &input(&o.metric, &with(&bad_labels, None), &counter(phases, bad))
        }
        Sli::Latency { threshold } => {
            let bucket = format!("{}_bucket", o.metric);
            input(&bucket, &with(&good_labels, Some(("le", decimal(threshold)))), &counter(phases, good))
                + &input(&bucket, &with(&good_labels, Some(("le", "+Inf".to_owned()))), &counter(phases, total))
                + &input(&format!("{}_count", o.metric), &with(&good_labels, None), &counter(phases, total))
        }
    }
}

impl Objective {
    /// The label values of its test series (see [`test_labels`]).
    pub fn test_labels(&self) -> Result<(Labels, Labels), String> {
        let selector = matchers(&self.selector)?;
        let errors = match self.sli() {
            Sli::Success { errors } => matchers(errors)?,
            Sli::Latency { .. } => Vec::new(),
        };
        test_labels(&selector, &errors)
    }
}

/// One promtool test case of an objective: what it shows, its series, the burn rates expected
/// at some times, and the alerts expected at others (`None`: silent).
struct Case {
    name: String,
    phases: Vec<Phase>,
    /// (minute, window, burn rate): the error ratio over the window, in budgets (compared
    /// rounded to 0.001); `None`: no ratio.
    ratios: Vec<(u32, String, Option<f64>)>,
    /// (minute, alert, fires).
    alerts: Vec<(u32, String, bool)>,
}

/// The cases every objective is tested on, in multiples of its error budget `b` (a share of
/// bad events above 100 % is every event):
/// - a 30-minute burst of 40 budgets pages and tickets at once; 35 minutes after it the 5m and
///   30m windows are clear and the page resolves, though the 1h and 6h ones still hold the
///   burst; the ticket resolves when the 2h and 6h are clear;
/// - 10 budgets pages through the 6h and 30m windows alone (1h and 5m ask for 14.4), then 5
///   budgets tickets without paging;
/// - 1.25 budgets after 12 hours at half of one tickets once the 3d ratio is above the budget,
///   a day later, and never pages;
/// - a steady 0.9 budget fires nothing;
/// - traffic that stops records no ratio over the windows without events and fires nothing.
fn cases(o: &Objective) -> Vec<Case> {
    let b = o.budget();
    let (fast, slow) = (o.fast_alert(), o.slow_alert());
    let both =
        |minute: u32, page: bool, ticket: bool| vec![(minute, fast.clone(), page), (minute, slow.clone(), ticket)];
    // The burn rate of `budgets` budgets once the share is capped at every event.
    let burn = |budgets: f64| (budgets * b).min(1.0) / b;
    let (burst, medium) = (burn(40.0), burn(10.0));
    vec![
        Case {
            name: format!(
                "{}: a 30-minute burst of {} times the error budget pages and tickets at once; 35 minutes after it the 5m and 30m windows are clear and the page resolves, though the 1h and 6h windows still hold the burst; the ticket resolves when the 2h and 6h windows are clear",
                o.name,
                decimal(round3(burst))
            ),
            phases: vec![traffic(30, burst * b), traffic(6 * 60 + 10, 0.0)],
            ratios: vec![
                (10, "5m".into(), Some(burst)),
                (10, "1h".into(), Some(burst)),
                (65, "5m".into(), Some(0.0)),
                (65, "30m".into(), Some(0.0)),
                (65, "1h".into(), Some(burst * 25.0 / 60.0)),
                (65, "6h".into(), Some(burst * 30.0 / 65.0)),
            ],
            alerts: [both(10, true, true), both(65, false, true), both(30 + 6 * 60 + 10, false, false)].concat(),
        },
        Case {
            name: format!(
                "{}: {} times the error budget pages through the 6h and 30m windows alone (1h and 5m ask for 14.4); 5 times after it tickets without paging",
                o.name,
                decimal(round3(medium))
            ),
            phases: vec![traffic(60, medium * b), traffic(60, 5.0 * b)],
            ratios: vec![
                (60, "1h".into(), Some(medium)),
                (60, "30m".into(), Some(medium)),
                (95, "30m".into(), Some(5.0)),
            ],
            alerts: [both(60, true, true), both(95, false, true)].concat(),
        },
        Case {
            name: format!(
                "{}: 1.25 times the error budget after 12 hours at half of it tickets once the 3d ratio is above the budget (a day into it), and never pages",
                o.name
            ),
            // The 3d ratio is (6 + 1.25 t) / (12 + t) budgets t hours into the burn: 0.875 at 12,
            // 1 at 24, 1.07 at 38 (values that do not round at the third decimal). At 20 the 1d
            // ratio is 1.125, above the budget but below the 3 the 1d window asks for.
            phases: vec![traffic(12 * 60, 0.5 * b), traffic(38 * 60, 1.25 * b)],
            ratios: vec![
                (24 * 60, "6h".into(), Some(1.25)),
                (24 * 60, "3d".into(), Some(0.875)),
                (32 * 60, "1d".into(), Some(1.125)),
                (50 * 60, "3d".into(), Some(1.07)),
            ],
            alerts: [both(24 * 60, false, false), both(32 * 60, false, false), both(50 * 60, false, true)].concat(),
        },
        Case {
            name: format!("{}: 0.9 times the error budget, steadily, fires nothing", o.name),
            phases: vec![traffic(12 * 60, 0.9 * b)],
            ratios: vec![(12 * 60, "6h".into(), Some(0.9)), (12 * 60, o.window.clone(), Some(0.9))],
            alerts: [both(60, false, false), both(12 * 60, false, false)].concat(),
        },
        Case {
            name: format!("{}: traffic that stops records no error ratio and fires nothing", o.name),
            phases: vec![traffic(30, 0.5 * b), Phase { minutes: 90, bad: None }],
            ratios: vec![(120, "5m".into(), None), (120, "1h".into(), None)],
            alerts: both(120, false, false),
        },
    ]
}

/// `x` rounded to 3 decimals, as `round(x, 0.001)` does.
fn round3(x: f64) -> f64 {
    (x * 1000.0 + 0.5).floor() / 1000.0
}

/// The promtool unit tests of every objective of `m`: each alert fires and resolves on
/// synthetic series (see [`cases`]). `rules` is the rule file's path from the tests directory.
pub fn unit_tests(m: &Monitoring, rules: &str, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Generated from {source} by `cargo run -p obs-gen`; do not edit.");
    let _ = writeln!(
        out,
        "# promtool unit tests of the service-level objectives' burn-rate alerts: synthetic traffic of 1000 events a"
    );
    let _ = writeln!(
        out,
        "# minute with a share of bad events in multiples of the objective's error budget. Ratios are compared as"
    );
    let _ = writeln!(out, "# burn rates rounded to 0.001 (promtool compares floats exactly).");
    let _ = writeln!(out, "rule_files:\n  - {rules}\nevaluation_interval: 5m\n\ntests:");
    for o in &m.objective {
        let _ = writeln!(out, "  # ---------------------------------------------------------------- {}", o.name);
        for c in cases(o) {
            write_case(&mut out, m, o, &c);
        }
    }
    out
}

/// One case as a promtool test.
fn write_case(out: &mut String, m: &Monitoring, o: &Objective, c: &Case) {
    let _ = writeln!(out, "  - name: {}\n    interval: 1m\n    input_series:", quote(&c.name));
    out.push_str(&series(o, &m.job, &c.phases));
    let _ = writeln!(out, "    promql_expr_test:");
    for (minute, window, burn) in &c.ratios {
        let _ = writeln!(
            out,
            "      - expr: 'round({} / {}, 0.001)'\n        eval_time: {}",
            o.ratio(window),
            decimal(o.budget()),
            eval_time(*minute)
        );
        match burn {
            Some(v) => {
                let v = decimal(round3(*v));
                let _ = writeln!(out, "        exp_samples:\n          - labels: '{{}}'\n            value: {v}");
            }
            None => out.push_str("        exp_samples: []\n"),
        }
    }
    let _ = writeln!(out, "    alert_rule_test:");
    let alerts = o.alerts();
    for (minute, name, fires) in &c.alerts {
        let _ = writeln!(out, "      - eval_time: {}\n        alertname: {name}", eval_time(*minute));
        if !fires {
            out.push_str("        exp_alerts: []\n");
            continue;
        }
        let a = alerts.iter().find(|a| &a.name == name).expect("its own alert");
        let _ = writeln!(
            out,
            "        exp_alerts:\n          - exp_labels:\n              severity: {}",
            a.severity.as_str()
        );
        for (l, v) in &a.labels {
            let _ = writeln!(out, "              {l}: {}", quote(v));
        }
        let _ = writeln!(out, "            exp_annotations:");
        let _ = writeln!(out, "              summary: {}", quote(&a.summary));
        let _ = writeln!(out, "              description: {}", quote(&a.description));
        let _ = writeln!(out, "              runbook_url: {}", quote(&format!("{}/{}.md", m.runbook_base, a.name)));
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(text: &str) -> Vec<Matcher> {
        matchers(text).unwrap()
    }

    #[test]
    fn reads_matchers_with_their_escapes() {
        let got = m(r#"endpoint="/a/{b}", status_code=~"5..",method!='GET', path!~`\d+`, x="a\"b\\c""#);
        let ops: Vec<_> = got.iter().map(|x| (x.label.as_str(), x.op, x.value.as_str())).collect();
        assert_eq!(
            ops,
            [
                ("endpoint", MatchOp::Equal, "/a/{b}"),
                ("status_code", MatchOp::Regex, "5.."),
                ("method", MatchOp::NotEqual, "GET"),
                ("path", MatchOp::NotRegex, r"\d+"),
                ("x", MatchOp::Equal, r#"a"b\c"#),
            ]
        );
        assert!(matchers("").unwrap().is_empty());
        for bad in [r#"a="x" b="y""#, "a=x", r#"a=~"(""#, r#"="x""#, r#"a="x"#, r#"a="\.""#] {
            assert!(matchers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn finds_label_values_for_bad_and_good_events() {
        let (bad, good) = test_labels(&m(r#"endpoint="/checkout""#), &m(r#"status_code=~"5..""#)).unwrap();
        assert_eq!(bad, [("endpoint".into(), "/checkout".into()), ("status_code".into(), "500".into())]);
        assert_eq!(good, [("endpoint".into(), "/checkout".into()), ("status_code".into(), "200".into())]);
        // Errors as what is not a success, and a selector on the same label.
        let (bad, good) = test_labels(&m(r#"status!="refunded""#), &m(r#"status!~"succeeded|ok""#)).unwrap();
        assert_eq!((bad[0].1.as_str(), good[0].1.as_str()), ("200", "succeeded"));
        // Latency: one label set.
        let (bad, good) = test_labels(&m(r#"route=~"/api/.+""#), &[]).unwrap();
        assert_eq!(bad, good);
        assert_eq!(bad[0].1, "/api/0");
        // Nothing both selected and failed.
        assert!(test_labels(&m(r#"status="ok""#), &m(r#"status="failed""#)).is_err());
    }

    #[test]
    fn counters_in_expanding_notation() {
        let phases = [traffic(60, 0.1), traffic(10, 0.0), Phase { minutes: 5, bad: None }];
        assert_eq!(counter(&phases, |p| p.bad.map_or(0.0, |b| b * 1000.0)), "0+100x60 6000+0x9 6000+0x4");
        assert_eq!(counter(&phases, |p| p.bad.map_or(0.0, |b| (1.0 - b) * 1000.0)), "0+900x60 55000+1000x9 64000+0x4");
    }

    #[test]
    fn numbers_read_as_written() {
        assert_eq!(decimal(1.0 - 0.995), "0.005");
        assert_eq!(decimal(14.4 * 0.005), "0.072");
        assert_eq!(percent(0.995), "99.5 %");
        assert_eq!(percent(0.9995), "99.95 %");
        assert_eq!(le_regex(2.0), r"2(\\.0)?");
        assert_eq!(le_regex(0.25), r"0\\.25");
        assert_eq!(last("1h"), "the last hour");
        assert_eq!(last("30m"), "the last 30 minutes");
        assert_eq!(duration_words(28.0 * 86400.0), "28 days");
        assert_eq!(a_duration(3600.0), "an hour");
        assert_eq!(rough_duration(28.0 * 86400.0 / 14.4), "1.9 days");
        assert_eq!(rough_duration(28.0 * 86400.0), "28 days");
        assert_eq!([eval_time(10), eval_time(1440), eval_time(430)], ["10m", "24h", "7h10m"]);
        assert_eq!(rough_percent(14.4 / 672.0), "2.1 %");
        assert_eq!(rough_percent(3.0 * 24.0 / 720.0), "10 %");
    }
}
