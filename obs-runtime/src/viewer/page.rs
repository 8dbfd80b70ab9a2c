//! The viewer's pages (server-rendered HTML) and their JSON.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde_json::{Value as Json, json};

use super::Settings;
use super::series::{self, QUANTILES};
use super::store::{self, Trace, ViewSpan, lock, text};
use crate::metrics::MetricKind;

/// A page or a piece of data.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
}

impl Reply {
    fn html(body: String) -> Reply {
        Reply { status: 200, content_type: "text/html; charset=utf-8", body }
    }

    fn json(v: Json) -> Reply {
        Reply { status: 200, content_type: "application/json", body: v.to_string() }
    }

    pub(crate) fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply { status, content_type: "text/plain; charset=utf-8", body: body.into() + "\n" }
    }
}

pub(crate) type Params = HashMap<String, String>;

fn param<'a>(p: &'a Params, k: &str) -> &'a str {
    p.get(k).map_or("", |v| v.trim())
}

/// HTML-escaped text.
pub(crate) fn esc(s: &str) -> Cow<'_, str> {
    if !s.contains(['<', '>', '&', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A query string's value, percent-encoded.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn query(p: &Params, keys: &[&str]) -> String {
    let mut q = String::new();
    for k in keys {
        let v = param(p, k);
        if !v.is_empty() {
            let _ = write!(q, "{}{k}={}", if q.is_empty() { "" } else { "&" }, enc(v));
        }
    }
    q
}

#[derive(PartialEq, Clone, Copy)]
pub(crate) enum Tab {
    Traces,
    Metrics,
    Logs,
    Profile,
}

fn layout(s: &Settings, tab: Tab, title: &str, main: &str) -> String {
    let mut h = String::with_capacity(main.len() + 2048);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width\"><title>{title} · {svc} · obs</title><link rel=\"stylesheet\" \
         href=\"/debug/obs/app.css\"><script src=\"/debug/obs/app.js\" defer></script></head><body><header><a \
         class=\"brand\" href=\"/debug/obs\">obs</a><span class=\"svc\">{svc}</span><nav>",
        title = esc(title),
        svc = esc(&s.service)
    );
    for (t, href, name) in [
        (Tab::Traces, "/debug/obs", "Traces"),
        (Tab::Metrics, "/debug/obs/metrics", "Metrics"),
        (Tab::Logs, "/debug/obs/logs", "Logs"),
        (Tab::Profile, "/debug/obs/profile", "Profile"),
    ] {
        let on = if t == tab { " class=\"on\"" } else { "" };
        let _ = write!(h, "<a href=\"{href}\"{on}>{name}</a>");
    }
    h.push_str("</nav><label class=\"live\"><input type=\"checkbox\" id=\"live\" checked> live</label></header><main>");
    if !super::recording() {
        h.push_str(
            "<p class=\"notice\">Not recording: the viewer is off in this process's configuration \
             (<code>OBS_VIEWER=true</code> turns it on; <code>obs_runtime::init</code> starts it).</p>",
        );
    }
    h.push_str(main);
    h.push_str("</main><footer id=\"usage\">");
    usage(&mut h);
    h.push_str("</footer></body></html>");
    h
}

/// What the buffers hold, against their bounds.
fn usage(h: &mut String) {
    let (traces, pinned, spans, bytes) = lock(&super::TRACES)
        .as_ref()
        .map_or((0, 0, 0, 0), |t| (t.map.len(), t.pinned(), t.map.values().map(|x| x.spans.len()).sum(), t.bytes));
    let (lines, line_bytes) = lock(&super::LINES).as_ref().map_or((0, 0), |l| (l.lines.len(), l.bytes()));
    let (followed, history) = lock(&series::SAMPLER).as_ref().map_or((0, 0), |s| (s.series.len(), s.bytes()));
    let _ = write!(
        h,
        "kept: {traces} traces ({pinned} failed or slow), {spans} spans, {} of {} MiB · {lines} log lines, {} of {} \
         MiB · {followed} series sampled every {} s, {} MiB",
        mib(bytes),
        store::TRACE_BYTES >> 20,
        mib(line_bytes),
        store::LINE_BYTES >> 20,
        series::EVERY.as_secs(),
        mib(history)
    );
}

/// What changes when a span or a log line is kept: the page polls it, and re-renders its live
/// parts when it moves.
pub(crate) fn version_text() -> Reply {
    let spans = lock(&super::TRACES).as_ref().map_or(0, |t| t.received);
    let lines = lock(&super::LINES).as_ref().map_or(0, |l| l.next);
    Reply::text(200, format!("{spans}.{lines}"))
}

pub(crate) fn usage_text() -> Reply {
    let mut h = String::new();
    usage(&mut h);
    Reply::text(200, h)
}

fn mib(bytes: usize) -> String {
    format!("{:.1}", bytes as f64 / (1 << 20) as f64)
}

fn hex128(id: u128) -> String {
    format!("{id:032x}")
}

/// `HH:MM:SS.mmm` (UTC) of Unix nanoseconds.
fn clock(ns: u64) -> String {
    let ms = ns / 1_000_000;
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}.{:03}", (s / 3600) % 24, (s / 60) % 60, s % 60, ms % 1000)
}

/// A duration, with three significant digits.
fn duration(ns: u64) -> String {
    let ns = ns as f64;
    let (v, unit) = if ns >= 1e9 {
        (ns / 1e9, "s")
    } else if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e3, "µs")
    };
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$} {unit}")
}

// ---------------------------------------------------------------------------------- traces

struct Filter {
    name: String,
    status: String,
    min_ns: u64,
    request_id: String,
}

impl Filter {
    fn of(p: &Params) -> Result<Filter, String> {
        let min_ms = match param(p, "min_ms") {
            "" => 0.0,
            v => v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("`min_ms` is a number of milliseconds, e.g. 250; got `{v}`"))?,
        };
        let status = param(p, "status").to_ascii_lowercase();
        if !["", "failed", "ok", "slow"].contains(&status.as_str()) {
            return Err(format!("`status` is failed, slow or ok; got `{status}`"));
        }
        Ok(Filter {
            name: param(p, "name").to_lowercase(),
            status,
            min_ns: (min_ms * 1e6) as u64,
            request_id: param(p, "request_id").to_owned(),
        })
    }

    fn admits(&self, t: &Trace) -> bool {
        (self.name.is_empty() || t.names.iter().any(|n| n.to_lowercase().contains(&self.name)))
            && match self.status.as_str() {
                "failed" => t.failed,
                "slow" => t.slow,
                "ok" => !t.failed,
                _ => true,
            }
            && t.end().saturating_sub(t.start()) >= self.min_ns
            && (self.request_id.is_empty() || t.request_id().is_some_and(|r| r.contains(&self.request_id)))
    }
}

/// The traces that pass `p`'s filter, newest first (at most 200).
fn listed(p: &Params, each: &mut dyn FnMut(u128, &Trace)) -> Result<(), String> {
    let f = Filter::of(p)?;
    let guard = lock(&super::TRACES);
    let Some(traces) = guard.as_ref() else { return Ok(()) };
    let mut ids: Vec<(u64, u128)> =
        traces.map.iter().filter(|(_, t)| f.admits(t)).map(|(id, t)| (t.start(), *id)).collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    for (_, id) in ids.into_iter().take(200) {
        each(id, &traces.map[&id]);
    }
    Ok(())
}

fn trace_rows(p: &Params) -> Result<String, String> {
    let mut h = String::new();
    h.push_str(
        "<table class=\"traces\"><thead><tr><th>started (UTC)</th><th>root span</th><th>spans</th><th>duration</th>\
         <th>status</th><th>request id</th></tr></thead><tbody>",
    );
    let mut n = 0;
    listed(p, &mut |id, t| {
        n += 1;
        let root = t.root();
        let name = root.map_or("?", |r| r.name);
        let status = if t.failed {
            "<span class=\"badge bad\">failed</span>"
        } else if t.slow {
            "<span class=\"badge warn\">slow</span>"
        } else {
            "<span class=\"badge ok\">ok</span>"
        };
        let names = &t.names;
        let _ = write!(
            h,
            "<tr class=\"trace{}\" data-trace=\"{id}\" data-failed=\"{}\"><td>{}</td><td><a class=\"root\" \
             href=\"/debug/obs/traces/{id}\">{}</a><div class=\"names\">{}</div></td><td>{}{}</td><td>{}</td><td>{status}</td><td \
             class=\"mono\">{}</td></tr>",
            if t.failed { " failed" } else { "" },
            t.failed,
            clock(t.start()),
            esc(name),
            esc(&names.join(" · ")),
            t.spans.len(),
            if t.dropped > 0 { format!(" (+{} not kept)", t.dropped) } else { String::new() },
            duration(t.end().saturating_sub(t.start())),
            esc(t.request_id().unwrap_or_default()),
            id = hex128(id),
        );
    })?;
    if n == 0 {
        h.push_str("<tr><td colspan=\"6\" class=\"empty\">No trace yet matches: send the service a request.</td></tr>");
    }
    h.push_str("</tbody></table>");
    Ok(h)
}

pub(crate) fn traces(s: &Settings, p: &Params) -> Reply {
    let rows = match trace_rows(p) {
        Ok(r) => r,
        Err(e) => return Reply::text(400, e),
    };
    if param(p, "fragment") == "1" {
        return Reply::html(rows);
    }
    let q = query(p, &["name", "status", "min_ms", "request_id"]);
    let status = param(p, "status");
    let mut main = String::new();
    let _ = write!(
        main,
        "<h1>Traces</h1><form class=\"filters\" method=\"get\" action=\"/debug/obs\"><input name=\"name\" \
         placeholder=\"span name\" value=\"{}\"><select name=\"status\">{}</select><input name=\"min_ms\" \
         type=\"number\" min=\"0\" step=\"any\" placeholder=\"at least (ms)\" value=\"{}\"><input name=\"request_id\" \
         placeholder=\"request id\" value=\"{}\"><button>Search</button><a href=\"/debug/obs\">clear</a></form><div \
         id=\"trace-list\" data-refresh=\"/debug/obs?{q}{amp}fragment=1\">{rows}</div>",
        esc(param(p, "name")),
        ["", "failed", "slow", "ok"]
            .iter()
            .map(|v| format!(
                "<option value=\"{v}\"{}>{}</option>",
                if *v == status { " selected" } else { "" },
                if v.is_empty() { "any status" } else { v }
            ))
            .collect::<String>(),
        esc(param(p, "min_ms")),
        esc(param(p, "request_id")),
        amp = if q.is_empty() { "" } else { "&" },
    );
    Reply::html(layout(s, Tab::Traces, "Traces", &main))
}

pub(crate) fn traces_json(p: &Params) -> Reply {
    let mut out = Vec::new();
    if let Err(e) = listed(p, &mut |id, t| {
        out.push(json!({
            "trace_id": hex128(id),
            "root": t.root().map(|r| r.name),
            "start_unix_nano": t.start(),
            "duration_ms": t.end().saturating_sub(t.start()) as f64 / 1e6,
            "spans": t.spans.len(),
            "spans_not_kept": t.dropped,
            "failed": t.failed,
            "slow": t.slow,
            "request_id": t.request_id(),
        }))
    }) {
        return Reply::text(400, e);
    }
    Reply::json(Json::Array(out))
}

/// The spans in waterfall order: each parent before its children, siblings by start time; a
/// span whose parent is not in the trace is a root.
fn waterfall(t: &Trace) -> Vec<(usize, &ViewSpan)> {
    let ids: std::collections::HashSet<u64> = t.spans.iter().map(|s| s.span_id).collect();
    let mut children: HashMap<u64, Vec<&ViewSpan>> = HashMap::new();
    let mut roots = Vec::new();
    for s in &t.spans {
        if s.parent != 0 && ids.contains(&s.parent) && s.parent != s.span_id {
            children.entry(s.parent).or_default().push(s);
        } else {
            roots.push(s);
        }
    }
    let by_start = |v: &mut Vec<&ViewSpan>| v.sort_by_key(|s| (s.start, s.span_id));
    by_start(&mut roots);
    for v in children.values_mut() {
        by_start(v);
    }
    let mut out = Vec::with_capacity(t.spans.len());
    let mut stack: Vec<(usize, &ViewSpan)> = roots.into_iter().rev().map(|s| (0, s)).collect();
    let mut seen = std::collections::HashSet::new();
    while let Some((depth, s)) = stack.pop() {
        if !seen.insert(s as *const ViewSpan) {
            continue;
        }
        out.push((depth, s));
        if let Some(c) = children.get(&s.span_id) {
            stack.extend(c.iter().rev().map(|c| (depth + 1, *c)));
        }
    }
    // Spans the walk cannot reach (parents in a cycle; an id seen twice) are shown, last.
    if out.len() < t.spans.len() {
        let shown: std::collections::HashSet<*const ViewSpan> =
            out.iter().map(|(_, s)| *s as *const ViewSpan).collect();
        out.extend(t.spans.iter().filter(|s| !shown.contains(&(*s as *const ViewSpan))).map(|s| (0, s)));
    }
    out
}

fn kv_table(h: &mut String, kvs: &[opentelemetry::KeyValue]) {
    if kvs.is_empty() {
        return;
    }
    h.push_str("<table class=\"kv\">");
    for kv in kvs {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(kv.key.as_str()), esc(&text(&kv.value)));
    }
    h.push_str("</table>");
}

fn parse_id(id: &str) -> Option<u128> {
    (id.len() == 32).then(|| u128::from_str_radix(id, 16).ok()).flatten()
}

pub(crate) fn trace(s: &Settings, id: &str) -> Reply {
    let Some(id) = parse_id(id) else {
        return Reply::text(
            400,
            format!("a trace id is 32 hex digits; got `{}`", id.chars().take(64).collect::<String>()),
        );
    };
    let guard = lock(&super::TRACES);
    let Some(t) = guard.as_ref().and_then(|g| g.map.get(&id)) else {
        drop(guard);
        let main = format!(
            "<h1>Trace {}</h1><p class=\"notice\">Not kept here (any more): the viewer keeps the newest {} traces and \
             {} failed or slow ones.</p>",
            hex128(id),
            store::MAX_TRACES,
            store::MAX_PINNED
        );
        let mut r = Reply::html(layout(s, Tab::Traces, "Trace not found", &main));
        r.status = 404;
        return r;
    };
    let (t0, t1) = (t.start(), t.end());
    let total = t1.saturating_sub(t0).max(1) as f64;
    let root = t.root().map_or("?", |r| r.name);
    let mut main = String::new();
    let _ = write!(
        main,
        "<h1>{}</h1><p class=\"sub\"><span class=\"mono\">trace {}</span> · {} · {} spans{} · started {} UTC{}{}</p>",
        esc(root),
        hex128(id),
        duration(t1.saturating_sub(t0)),
        t.spans.len(),
        if t.dropped > 0 { format!(" (+{} not kept)", t.dropped) } else { String::new() },
        clock(t0),
        if t.failed { " · <span class=\"badge bad\">failed</span>" } else { "" },
        match &s.grafana {
            Some(g) => format!(
                " · <a href=\"{}\">open in Grafana (Tempo)</a> · <a href=\"{}\">its logs in Grafana (Loki)</a>",
                esc(&grafana_trace(g, id)),
                esc(&grafana_logs(g, &s.service, id))
            ),
            None => String::new(),
        }
    );
    main.push_str("<div class=\"split\"><section class=\"waterfall\" id=\"waterfall\">");
    for (depth, sp) in waterfall(t) {
        let left = sp.start.saturating_sub(t0) as f64 / total * 100.0;
        let width = (sp.duration_ns() as f64 / total * 100.0).max(0.3);
        let failed = sp.error.is_some();
        let _ = write!(
            main,
            "<details class=\"span{}\" data-name=\"{}\" data-depth=\"{depth}\" data-failed=\"{failed}\"><summary><span \
             class=\"name\" style=\"padding-left:{}px\">{}</span><span class=\"dur\">{}</span><span class=\"track\"><span \
             class=\"bar\" style=\"left:{left:.2}%;width:{width:.2}%\"></span></span></summary><div class=\"detail\">",
            if failed { " failed" } else { "" },
            esc(sp.name),
            depth * 14,
            esc(sp.name),
            duration(sp.duration_ns()),
        );
        let _ = write!(
            main,
            "<p class=\"mono\">{:?} · span {:016x}{} · +{} from the trace's start</p>",
            sp.kind,
            sp.span_id,
            if sp.parent != 0 {
                format!(" · parent {:016x}{}", sp.parent, if sp.parent_remote { " (remote)" } else { "" })
            } else {
                String::new()
            },
            duration(sp.start.saturating_sub(t0))
        );
        if let Some(e) = &sp.error {
            let _ = write!(main, "<p class=\"error\">error: {}</p>", esc(e));
        }
        kv_table(&mut main, &sp.attributes);
        for (name, at, attrs) in &sp.events {
            let _ = write!(
                main,
                "<p class=\"event\">event <b>{}</b> at +{}</p>",
                esc(name),
                duration(at.saturating_sub(t0))
            );
            kv_table(&mut main, attrs);
        }
        for (lt, ls) in &sp.links {
            let _ = write!(
                main,
                "<p class=\"link\">follows from <a href=\"/debug/obs/traces/{t}\">trace {t}</a> (span {ls:016x}): the request \
                 or task that started it</p>",
                t = hex128(*lt)
            );
        }
        main.push_str("</div></details>");
    }
    drop(guard);
    main.push_str("</section><aside class=\"trace-logs\"><h2>Log lines of this trace</h2>");
    let p: Params = [("trace_id".to_owned(), hex128(id))].into_iter().collect();
    main.push_str(&log_rows(&p, 500, true));
    main.push_str("</aside></div>");
    Reply::html(layout(s, Tab::Traces, root, &main))
}

fn grafana_trace(base: &str, id: u128) -> String {
    let pane = json!({"t": {"datasource": "tempo", "queries": [{"refId": "A", "datasource": {"type": "tempo", "uid": "tempo"},
        "queryType": "traceql", "query": hex128(id)}], "range": {"from": "now-1h", "to": "now"}}});
    format!("{base}/explore?schemaVersion=1&panes={}", enc(&pane.to_string()))
}

/// The trace's log lines in Loki, as the provisioned Tempo data source's traces-to-logs query
/// finds them (`deploy/grafana/provisioning/datasources/datasources.yaml`).
fn grafana_logs(base: &str, service: &str, id: u128) -> String {
    let expr = format!("{{service_name={}}} | trace_id=\"{}\"", Json::String(service.to_owned()), hex128(id));
    let pane = json!({"l": {"datasource": "loki", "queries": [{"refId": "A", "datasource": {"type": "loki", "uid": "loki"},
        "expr": expr}], "range": {"from": "now-1h", "to": "now"}}});
    format!("{base}/explore?schemaVersion=1&panes={}", enc(&pane.to_string()))
}

fn value_json(v: &opentelemetry::Value) -> Json {
    match v {
        opentelemetry::Value::Bool(b) => json!(b),
        opentelemetry::Value::I64(i) => json!(i),
        opentelemetry::Value::F64(f) => json!(f),
        other => json!(text(other)),
    }
}

fn kv_json(kvs: &[opentelemetry::KeyValue]) -> Json {
    Json::Object(kvs.iter().map(|kv| (kv.key.as_str().to_owned(), value_json(&kv.value))).collect())
}

pub(crate) fn trace_json(id: &str) -> Reply {
    let Some(id) = parse_id(id) else { return Reply::text(400, "a trace id is 32 hex digits") };
    let guard = lock(&super::TRACES);
    let Some(t) = guard.as_ref().and_then(|g| g.map.get(&id)) else {
        return Reply::text(404, "no such trace kept");
    };
    let spans: Vec<Json> = waterfall(t)
        .into_iter()
        .map(|(depth, s)| {
            json!({
                "span_id": format!("{:016x}", s.span_id),
                "parent_span_id": (s.parent != 0).then(|| format!("{:016x}", s.parent)),
                "depth": depth,
                "name": s.name,
                "kind": format!("{:?}", s.kind),
                "start_unix_nano": s.start,
                "end_unix_nano": s.end,
                "duration_ms": s.duration_ns() as f64 / 1e6,
                "error": s.error,
                "attributes": kv_json(&s.attributes),
                "events": s.events.iter().map(|(n, at, a)| json!({"name": n, "time_unix_nano": at, "attributes": kv_json(a)})).collect::<Vec<_>>(),
                "links": s.links.iter().map(|(t, sp)| json!({"trace_id": hex128(*t), "span_id": format!("{sp:016x}")})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let out = json!({"trace_id": hex128(id), "failed": t.failed, "slow": t.slow, "spans_not_kept": t.dropped, "spans": spans});
    drop(guard);
    let mut out = out;
    let p: Params = [("trace_id".to_owned(), hex128(id))].into_iter().collect();
    out["logs"] = log_values(&p, 500);
    Reply::json(out)
}

// ------------------------------------------------------------------------------------ logs

/// A log line's level, trace id and request id: from its JSON, or from the pretty format's
/// ` LEVEL ` and `key=value` pairs.
fn line_fields(line: &str) -> (Option<Json>, String, String, String) {
    if line.starts_with('{')
        && let Ok(Json::Object(m)) = serde_json::from_str::<Json>(line)
    {
        let get = |k: &str| m.get(k).and_then(Json::as_str).unwrap_or_default().to_owned();
        let (level, trace, request) = (get("level"), get("trace_id"), get("request_id"));
        return (Some(Json::Object(m)), level, trace, request);
    }
    let level = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let pair = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_default()
    };
    (None, level, pair("trace_id"), pair("request_id"))
}

fn level_rank(level: &str) -> u8 {
    match level.to_ascii_uppercase().as_str() {
        "ERROR" => 5,
        "WARN" => 4,
        "INFO" => 3,
        "DEBUG" => 2,
        "TRACE" => 1,
        _ => 0,
    }
}

/// The newest lines passing `p`'s filter (`level` and up, `request_id`, `trace_id`), newest
/// first.
/// A log line kept, and what the filters read of it.
struct Line<'a> {
    seq: u64,
    text: &'a str,
    parsed: Option<Json>,
    level: &'a str,
    trace: &'a str,
}

/// The `level` parameter, checked.
fn level_param(p: &Params) -> Result<u8, String> {
    match param(p, "level") {
        "" => Ok(0),
        v => match level_rank(v) {
            0 => Err(format!("`level` is ERROR, WARN, INFO, DEBUG or TRACE; got `{v}`")),
            rank => Ok(rank),
        },
    }
}

fn matching(p: &Params, max: usize, each: &mut dyn FnMut(Line<'_>)) {
    let min = level_param(p).unwrap_or(0);
    let (trace, request) = (param(p, "trace_id").to_ascii_lowercase(), param(p, "request_id"));
    // References taken under the lock, the lines read after it: the log layer, which takes it for
    // every line, waits for the copy of a list, not for the parsing.
    let lines: Vec<(u64, std::sync::Arc<str>)> =
        lock(&super::LINES).as_ref().map(|l| l.lines.iter().cloned().collect()).unwrap_or_default();
    let mut n = 0;
    for (seq, line) in lines.iter().rev() {
        if n >= max {
            break;
        }
        let (parsed, level, t, r) = line_fields(line);
        if level_rank(&level) < min
            || (!trace.is_empty() && t != trace)
            || (!request.is_empty() && !r.contains(request))
        {
            continue;
        }
        n += 1;
        each(Line { seq: *seq, text: line, parsed, level: &level, trace: &t });
    }
}

fn log_rows(p: &Params, max: usize, in_trace: bool) -> String {
    let mut rows = Vec::new();
    matching(p, max, &mut |Line { text: line, parsed, level, trace, .. }| {
        let mut h = String::new();
        // A class name: letters only, whatever the line held.
        let lv: String = level.chars().filter(char::is_ascii_alphabetic).collect::<String>().to_ascii_lowercase();
        match parsed {
            Some(Json::Object(m)) => {
                let time = m.get("timestamp").and_then(Json::as_str).unwrap_or_default();
                let time = time.split('T').nth(1).unwrap_or(time).trim_end_matches('Z');
                let message = m.get("message").and_then(Json::as_str).unwrap_or_default();
                let target = m.get("target").and_then(Json::as_str).unwrap_or_default();
                let rest: Vec<String> = m
                    .iter()
                    .filter(|(k, _)| {
                        !["timestamp", "level", "message", "target", "trace_id", "span_id"].contains(&k.as_str())
                    })
                    .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                    .collect();
                let _ = write!(
                    h,
                    "<tr class=\"line {lv}\"><td class=\"mono\">{}</td><td><span class=\"lvl {lv}\">{}</span></td><td><b>{}</b> \
                     <span class=\"target\">{}</span>{}<div class=\"fields\">{}</div></td></tr>",
                    esc(time),
                    esc(level),
                    esc(message),
                    esc(target),
                    if trace.is_empty() || in_trace {
                        String::new()
                    } else {
                        format!(" <a class=\"mono\" href=\"/debug/obs/traces/{t}\">trace {t:.8}…</a>", t = esc(trace))
                    },
                    esc(&rest.join(" "))
                );
            }
            _ => {
                let _ = write!(h, "<tr class=\"line {lv}\"><td colspan=\"3\" class=\"mono\">{}</td></tr>", esc(line));
            }
        }
        rows.push(h);
    });
    // The tail newest first; a trace's lines in the order they were written.
    if in_trace {
        rows.reverse();
    }
    let mut h = String::from("<table class=\"logs\"><tbody>");
    let n = rows.len();
    h.extend(rows);
    if n == 0 {
        h.push_str("<tr><td class=\"empty\">No log line matches.</td></tr>");
    }
    h.push_str("</tbody></table>");
    h
}

fn log_values(p: &Params, max: usize) -> Json {
    let mut out = Vec::new();
    matching(p, max, &mut |Line { seq, text: line, parsed, .. }| {
        out.push(json!({"seq": seq, "line": parsed.unwrap_or_else(|| Json::String(line.to_owned()))}));
    });
    Json::Array(out)
}

pub(crate) fn logs(s: &Settings, p: &Params) -> Reply {
    if let Err(e) = level_param(p) {
        return Reply::text(400, e);
    }
    let rows = log_rows(p, 300, false);
    if param(p, "fragment") == "1" {
        return Reply::html(rows);
    }
    let q = query(p, &["level", "request_id", "trace_id"]);
    let level = param(p, "level").to_ascii_uppercase();
    let main = format!(
        "<h1>Logs</h1><form class=\"filters\" method=\"get\" action=\"/debug/obs/logs\"><select name=\"level\">{}</select><input \
         name=\"request_id\" placeholder=\"request id\" value=\"{}\"><input name=\"trace_id\" placeholder=\"trace id\" \
         value=\"{}\"><button>Filter</button><a href=\"/debug/obs/logs\">clear</a></form><p class=\"sub\">The newest lines \
         first, as written (scrubbed).</p><div id=\"log-tail\" data-refresh=\"/debug/obs/logs?{q}{amp}fragment=1\">{rows}</div>",
        ["", "ERROR", "WARN", "INFO", "DEBUG"]
            .iter()
            .map(|v| format!(
                "<option value=\"{v}\"{}>{}</option>",
                if *v == level { " selected" } else { "" },
                if v.is_empty() { "every level" } else { v }
            ))
            .collect::<String>(),
        esc(param(p, "request_id")),
        esc(param(p, "trace_id")),
        amp = if q.is_empty() { "" } else { "&" },
    );
    Reply::html(layout(s, Tab::Logs, "Logs", &main))
}

pub(crate) fn logs_json(p: &Params) -> Reply {
    if let Err(e) = level_param(p) {
        return Reply::text(400, e);
    }
    Reply::json(log_values(p, store::MAX_LINES))
}

// --------------------------------------------------------------------------------- metrics

fn labels_of(s: &crate::metrics::Series, names: &[&str]) -> Vec<(String, String)> {
    names.iter().zip(s.label_values()).map(|(n, v)| ((*n).to_owned(), v.to_owned())).collect()
}

fn number(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn seconds(v: f64) -> String {
    if v.is_finite() { duration((v * 1e9) as u64) } else { "–".into() }
}

/// A small chart: one polyline per series of points `(t, y)`, NaN a gap.
fn sparkline(lines: &[Vec<(f64, f64)>]) -> String {
    let pts = lines.iter().flatten().filter(|(_, y)| y.is_finite());
    // From zero, or from the lowest value if below it (a gauge may go negative).
    let (mut t0, mut t1, mut y0, mut y1) = (f64::MAX, f64::MIN, 0f64, 0f64);
    for (t, y) in pts {
        t0 = t0.min(*t);
        t1 = t1.max(*t);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    let mut svg = String::from("<svg class=\"spark\" viewBox=\"0 0 160 32\" preserveAspectRatio=\"none\">");
    if t1 > t0 {
        let range = if y1 > y0 { y1 - y0 } else { 1.0 };
        for (i, line) in lines.iter().enumerate() {
            let mut d = String::new();
            let mut pen = false;
            for (t, y) in line {
                if !y.is_finite() {
                    pen = false;
                    continue;
                }
                let x = (t - t0) / (t1 - t0) * 160.0;
                let yy = 31.0 - (y - y0) / range * 30.0;
                let _ = write!(d, "{}{x:.1},{yy:.1}", if pen { " L" } else { " M" });
                pen = true;
            }
            let _ = write!(svg, "<path class=\"l{i}\" d=\"{d}\"/>");
        }
    }
    svg.push_str("</svg>");
    svg
}

struct Endpoint {
    rate: f64,
    errors: f64,
    buckets: Vec<u64>,
    bounds: &'static [f64],
}

fn endpoints(sampler: &series::Sampler) -> Vec<((String, String), Endpoint)> {
    let mut out: BTreeMap<(String, String), Endpoint> = BTreeMap::new();
    for (requests, duration) in crate::metrics::http_server_families() {
        let names = requests.def().labels;
        let at = |s: &crate::metrics::Series, n: &str| {
            names
                .iter()
                .position(|x| *x == n)
                .and_then(|i| s.label_values().nth(i).map(str::to_owned))
                .unwrap_or_default()
        };
        for s in requests.snapshot() {
            let e = out.entry((at(s, "method"), at(s, "endpoint"))).or_insert(Endpoint {
                rate: 0.0,
                errors: 0.0,
                buckets: Vec::new(),
                bounds: &[],
            });
            let rate = sampler.recent_rate(s).unwrap_or(0.0);
            e.rate += rate;
            if at(s, "status_code").starts_with('5') {
                e.errors += rate;
            }
        }
        let dnames = duration.def().labels;
        let dat = |s: &crate::metrics::Series, n: &str| {
            dnames
                .iter()
                .position(|x| *x == n)
                .and_then(|i| s.label_values().nth(i).map(str::to_owned))
                .unwrap_or_default()
        };
        for s in duration.snapshot() {
            let Some(counts) = sampler.recent_buckets(s) else { continue };
            let e = out.entry((dat(s, "method"), dat(s, "endpoint"))).or_insert(Endpoint {
                rate: 0.0,
                errors: 0.0,
                buckets: Vec::new(),
                bounds: &[],
            });
            e.bounds = duration.def().buckets;
            if e.buckets.is_empty() {
                e.buckets = counts;
            } else {
                e.buckets.iter_mut().zip(counts).for_each(|(a, b)| *a += b);
            }
        }
    }
    out.into_iter().collect()
}

fn metrics_html(p: &Params) -> String {
    let filter = param(p, "q").to_lowercase();
    let guard = lock(&series::SAMPLER);
    let empty = series::Sampler::default();
    let sampler = guard.as_ref().unwrap_or(&empty);
    let mut h = String::new();
    let eps = endpoints(sampler);
    if !eps.is_empty() {
        h.push_str(
            "<section id=\"http\"><h2>HTTP endpoints</h2><table class=\"endpoints\"><thead><tr><th>method</th><th>endpoint</th>\
             <th>requests/s</th><th>5xx</th><th>p50</th><th>p99</th></tr></thead><tbody>",
        );
        for ((method, endpoint), e) in &eps {
            let q = |x: f64| seconds(series::quantile(x, e.bounds, &e.buckets));
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(method),
                esc(endpoint),
                number(e.rate),
                if e.rate > 0.0 { format!("{:.1} %", e.errors / e.rate * 100.0) } else { "–".into() },
                q(0.5),
                q(0.99)
            );
        }
        h.push_str("</tbody></table><p class=\"sub\">Over the last minute.</p></section>");
    }
    let mut families = crate::metrics::registry().families();
    families.sort_by_key(|f| (f.def().name.starts_with("obs_"), f.def().name));
    for f in families {
        let def = f.def();
        if !filter.is_empty() && !def.name.to_lowercase().contains(&filter) {
            continue;
        }
        let all = f.snapshot();
        let total: f64 = match def.kind {
            // Folded from +0 (an empty `sum` of floats is -0).
            MetricKind::Histogram => all
                .iter()
                .filter_map(|s| series::buckets(s))
                .map(|(_, c)| c.iter().sum::<u64>() as f64)
                .fold(0.0, |a, b| a + b),
            _ => all.iter().filter_map(|s| s.get()).fold(0.0, |a, b| a + b),
        };
        let _ = write!(
            h,
            "<section class=\"family\" id=\"metric-{name}\" data-metric=\"{name}\"><h3>{name} <span class=\"kind\">{kind}</span> \
             <span class=\"total\" data-value=\"{total}\" title=\"{what}\">{shown}</span></h3><p class=\"help\">{help}</p>",
            name = esc(def.name),
            kind = def.kind.type_name(),
            shown = number(total),
            what = if def.kind == MetricKind::Histogram { "observations, all series" } else { "sum of all series" },
            help = esc(def.help),
        );
        if all.is_empty() {
            h.push_str("<p class=\"sub\">Nothing recorded yet.</p></section>");
            continue;
        }
        h.push_str("<table class=\"series\"><tbody>");
        for s in all.iter().take(50) {
            let labels = labels_of(s, def.labels);
            let labels = if labels.is_empty() {
                "<i>no labels</i>".to_owned()
            } else {
                labels.iter().map(|(k, v)| format!("{}=\"{}\"", esc(k), esc(v))).collect::<Vec<_>>().join(", ")
            };
            let history = sampler.history(s);
            let (value, chart, legend) = match def.kind {
                MetricKind::Histogram => {
                    let count = series::buckets(s).map_or(0, |(_, c)| c.iter().sum::<u64>());
                    let lines: Vec<Vec<(f64, f64)>> = (0..QUANTILES.len())
                        .map(|i| {
                            history
                                .map_or_else(Vec::new, |h| h.points.iter().map(|p| (p.t, f64::from(p.q[i]))).collect())
                        })
                        .collect();
                    let recent = sampler.recent_buckets(s);
                    let q = |x: f64| recent.as_ref().map_or(f64::NAN, |c| series::quantile(x, def.buckets, c));
                    let value = if def.name.ends_with("_seconds") {
                        format!("{count} · p50 {} · p99 {}", seconds(q(0.5)), seconds(q(0.99)))
                    } else {
                        format!("{count} · p50 {} · p99 {}", number(q(0.5)), number(q(0.99)))
                    };
                    (value, sparkline(&lines), "p50 · p90 · p99")
                }
                MetricKind::Gauge => (
                    number(s.get().unwrap_or(0.0)),
                    sparkline(&[history.map_or_else(Vec::new, |h| h.points.iter().map(|p| (p.t, p.v)).collect())]),
                    "value",
                ),
                _ => {
                    let rates: Vec<(f64, f64)> = history.map_or_else(Vec::new, |h| {
                        h.points
                            .iter()
                            .zip(h.points.iter().skip(1))
                            .map(|(a, b)| (b.t, (b.v - a.v).max(0.0) / (b.t - a.t).max(1e-9)))
                            .collect()
                    });
                    let rate = sampler.recent_rate(s).map_or(String::new(), |r| format!(" · {}/s", number(r)));
                    (format!("{}{rate}", number(s.get().unwrap_or(0.0))), sparkline(&[rates]), "rate")
                }
            };
            let _ = write!(
                h,
                "<tr><td class=\"labels mono\">{labels}</td><td class=\"value\">{}</td><td title=\"{legend}\">{chart}</td></tr>",
                esc(&value)
            );
        }
        if all.len() > 50 {
            let _ = write!(
                h,
                "<tr><td colspan=\"3\" class=\"sub\">and {} more series (JSON has all)</td></tr>",
                all.len() - 50
            );
        }
        h.push_str("</tbody></table></section>");
    }
    h
}

pub(crate) fn metrics(s: &Settings, p: &Params) -> Reply {
    let body = metrics_html(p);
    if param(p, "fragment") == "1" {
        return Reply::html(body);
    }
    let q = query(p, &["q"]);
    let main = format!(
        "<h1>Metrics</h1><form class=\"filters\" method=\"get\" action=\"/debug/obs/metrics\"><input name=\"q\" \
         placeholder=\"family name\" value=\"{}\"><button>Filter</button><a href=\"/debug/obs/metrics\">clear</a></form><p \
         class=\"sub\">Read in process every {} s; charts cover the last {} minutes (counters as rates, histograms as p50, p90 \
         and p99 of each interval).</p><div id=\"metric-list\" data-refresh=\"/debug/obs/metrics?{q}{amp}fragment=1\">{body}</div>",
        esc(param(p, "q")),
        series::EVERY.as_secs(),
        series::EVERY.as_secs() as usize * series::POINTS / 60,
        amp = if q.is_empty() { "" } else { "&" },
    );
    Reply::html(layout(s, Tab::Metrics, "Metrics", &main))
}

pub(crate) fn metrics_json() -> Reply {
    let guard = lock(&series::SAMPLER);
    let empty = series::Sampler::default();
    let sampler = guard.as_ref().unwrap_or(&empty);
    let mut out = Vec::new();
    for f in crate::metrics::registry().families() {
        let def = f.def();
        let series: Vec<Json> = f
            .snapshot()
            .into_iter()
            .map(|s| {
                let labels: serde_json::Map<String, Json> =
                    labels_of(s, def.labels).into_iter().map(|(k, v)| (k, Json::String(v))).collect();
                let points: Vec<Json> = sampler
                    .history(s)
                    .map(|h| {
                        h.points
                            .iter()
                            .map(|p| {
                                if def.kind == MetricKind::Histogram {
                                    json!([p.t, p.v, p.q])
                                } else {
                                    json!([p.t, p.v])
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let mut v = json!({"labels": labels, "points": points});
                match series::buckets(s) {
                    Some((bounds, counts)) => {
                        v["count"] = json!(counts.iter().sum::<u64>());
                        v["bounds"] = json!(bounds);
                        v["bucket_counts"] = json!(counts);
                    }
                    None => v["value"] = json!(s.get()),
                }
                if let Some(r) = sampler
                    .recent_rate(s)
                    .filter(|_| matches!(def.kind, MetricKind::Counter | MetricKind::FloatCounter))
                {
                    v["rate_per_second"] = json!(r);
                }
                v
            })
            .collect();
        out.push(json!({"name": def.name, "type": def.kind.type_name(), "help": def.help, "series": series}));
    }
    Reply::json(json!({"every_seconds": series::EVERY.as_secs(), "families": out}))
}

// --------------------------------------------------------------------------------- profile

pub(crate) fn profile(s: &Settings) -> Reply {
    let main = if cfg!(feature = "profiling") {
        format!(
            "<h1>CPU profile</h1><p>Samples every thread's stack {} times a second for the time chosen, then shows the \
             flamegraph (widest: most CPU; click a frame to zoom).</p><p><select id=\"seconds\"><option>5</option><option \
             selected>10</option><option>30</option></select> seconds <button id=\"take-profile\">Take a CPU \
             profile</button> <span id=\"profile-status\"></span></p><iframe id=\"flamegraph\" title=\"flamegraph\" \
             hidden></iframe>",
            s.frequency
        )
    } else {
        "<h1>CPU profile</h1><p class=\"notice\">This build has no profiler: obs-runtime's <code>profiling</code> feature \
         adds it.</p>"
            .to_owned()
    };
    Reply::html(layout(s, Tab::Profile, "Profile", &main))
}
