//! Sampling rules at run time: the head decision for a span this service decides (a root, or
//! with a non-parent-based sampler the first span of a caller's trace), rules first, then the
//! sampler's ratio. See [`SamplingRule`] for what a rule matches.
//!
//! Without rules, deciding is what it was: one null pointer more. With rules, a span of a
//! `#[traced_span]` (or task) site is decided once per site and rule set (a 64-entry table keyed
//! by the site's address), so its sampled-out path stays a table load; an HTTP server span,
//! whose route and path vary, is matched rule by rule at each request.

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use super::SpanSite;
use crate::config::{Decision, SamplingRule};

/// What the HTTP layer knows when its server span starts.
pub(crate) struct Http<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    /// The route template, when the layer knows it at the start (inside the router).
    pub(crate) route: Option<&'a str>,
}

/// The rules in force with their generation, read together through one pointer: a leaked set
/// (rules change at `init`, rarely after), null for none.
static RULES: AtomicPtr<RuleSet> = AtomicPtr::new(std::ptr::null_mut());
/// Counts changes of the rules: each set has the next generation.
static GENERATION: AtomicU32 = AtomicU32::new(0);
/// Decisions per site: `address << 16 | generation (8 bits) << 8 | code`, code 1 for "no rule
/// matched" and 2 + i for rule i. Cleared at every change of the rules, so an entry of an old set
/// can only come back from a thread that was deciding under it while the rules changed, and its
/// generation then differs.
static SITES: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

struct RuleSet {
    generation: u32,
    rules: Vec<Rule>,
}

struct Rule {
    name: Option<String>,
    route: Option<Vec<String>>,
    method: Option<String>,
    decision: Decision,
    threshold: u64,
}

/// Installs `rules` (none: the sampler's ratio alone decides).
pub(crate) fn set_rules(rules: &[SamplingRule]) {
    if rules.len() > MAX_RULES {
        tracing::warn!(target: "obs", rules = rules.len(), "only the first {MAX_RULES} sampling rules apply");
    }
    let compiled: Vec<Rule> = rules
        .iter()
        .take(MAX_RULES)
        .map(|r| Rule {
            name: r.name.clone(),
            route: r.route.as_deref().map(segments),
            method: r.method.clone(),
            decision: r.decision,
            threshold: match r.decision {
                Decision::Always => u64::MAX,
                Decision::Never => 0,
                Decision::Ratio(ratio) => super::threshold_for(ratio),
            },
        })
        .collect();
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    let new = if compiled.is_empty() {
        std::ptr::null_mut()
    } else {
        Box::into_raw(Box::new(RuleSet { generation, rules: compiled }))
    };
    // The old set is leaked: a thread may still be reading it (rules change once or twice in a
    // process's life).
    RULES.store(new, Ordering::Release);
    for slot in &SITES {
        slot.store(0, Ordering::Relaxed);
    }
}

/// At most this many rules (a site's cached decision names its rule in one byte).
const MAX_RULES: usize = 250;

/// Whether a rule may drop a root (`never`, or a ratio below 1).
pub(crate) fn may_drop() -> bool {
    rules().is_some_and(|set| set.rules.iter().any(|r| r.threshold != u64::MAX))
}

fn rules() -> Option<&'static RuleSet> {
    let p = RULES.load(Ordering::Acquire);
    // SAFETY: a non-null pointer comes from `Box::into_raw` in `set_rules` and is never freed.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// The head decision for a trace this service decides.
#[inline]
pub(crate) fn decide(trace_id: u128, site: &'static SpanSite, http: Option<&Http<'_>>) -> bool {
    if RULES.load(Ordering::Relaxed).is_null() {
        return super::sampled(trace_id);
    }
    decide_by_rules(trace_id, site, http)
}

#[inline(never)]
fn decide_by_rules(trace_id: u128, site: &'static SpanSite, http: Option<&Http<'_>>) -> bool {
    let Some(RuleSet { generation, rules }) = rules() else { return super::sampled(trace_id) };
    let rule = match http {
        Some(http) => rules.iter().find(|r| r.matches(site.name, Some(http))),
        None => {
            let address = site as *const SpanSite as u64;
            let slot = &SITES[((address >> 4) ^ (address >> 10)) as usize % SITES.len()];
            let tag = address << 16 | u64::from(*generation as u8) << 8;
            let cached = slot.load(Ordering::Relaxed);
            let index = if cached & !0xFF == tag && cached & 0xFF != 0 {
                (cached & 0xFF) as usize
            } else {
                let index = rules.iter().position(|r| r.matches(site.name, None)).map_or(1, |i| i + 2);
                slot.store(tag | index as u64, Ordering::Relaxed);
                index
            };
            index.checked_sub(2).and_then(|i| rules.get(i))
        }
    };
    match rule {
        Some(r) => match r.decision {
            Decision::Always => true,
            Decision::Never => false,
            Decision::Ratio(_) => ((trace_id as u64) >> 1) < r.threshold,
        },
        None => super::sampled(trace_id),
    }
}

impl Rule {
    fn matches(&self, name: &str, http: Option<&Http<'_>>) -> bool {
        if let Some(pattern) = &self.name
            && !glob(pattern, name)
        {
            return false;
        }
        if self.route.is_none() && self.method.is_none() {
            return true;
        }
        let Some(http) = http else { return false };
        if let Some(method) = &self.method
            && method != http.method
        {
            return false;
        }
        match &self.route {
            None => true,
            Some(template) => match http.route {
                Some(route) => route_matches(template, route),
                None => path_matches(template, http.path),
            },
        }
    }
}

/// A route template's or a path's segments (`/a/{b}` → `a`, `{b}`).
fn segments(path: &str) -> Vec<String> {
    path.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Whether the route `route` (a template, as the router matched it) is the rule's `template`:
/// segment by segment, parameters matching parameters whatever their names (`/events/{id}` is
/// axum's `/events/{event}`), so that a rule means the same whether the layer knows the route at
/// the start or matches the path.
fn route_matches(template: &[String], route: &str) -> bool {
    let param = |s: &str| s.starts_with('{') && s.ends_with('}');
    let mut parts = route.split('/').filter(|s| !s.is_empty());
    for t in template {
        match parts.next() {
            Some(r) if param(t) && param(r) && t.starts_with("{*") == r.starts_with("{*") => {}
            Some(r) if r == t => {}
            _ => return false,
        }
    }
    parts.next().is_none()
}

/// Whether `path` is a request of the route `template`: `{x}` matches any one segment, `{*x}`
/// the rest of the path.
fn path_matches(template: &[String], path: &str) -> bool {
    let mut parts = path.split('/').filter(|s| !s.is_empty());
    for t in template {
        if t.starts_with("{*") {
            return true;
        }
        match parts.next() {
            Some(_) if t.starts_with('{') && t.ends_with('}') => {}
            Some(p) if p == t => {}
            _ => return false,
        }
    }
    parts.next().is_none()
}

/// `*` matches any characters (none included); everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let first = pattern.split('*').next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let Some(last) = pattern.rsplit('*').next().filter(|_| pattern.contains('*')) else { return rest.is_empty() };
    // The pieces between the first and the last `*`, each found after the previous one.
    let middle = pattern[first.len()..pattern.len() - last.len()].split('*').filter(|p| !p.is_empty());
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_templates_and_paths() {
        for (pattern, text, want) in [
            ("ticket.checkout", "ticket.checkout", true),
            ("ticket.checkout", "ticket.checkout2", false),
            ("report.*", "report.daily", true),
            ("report.*", "report.", true),
            ("report.*", "reports", false),
            ("*.checkout", "ticket.checkout", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXcYYb", false),
            ("*", "", true),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(glob(pattern, text), want, "{pattern} ~ {text}");
        }
        let t = segments("/events/{event}/tiers/{tier}/checkout");
        assert!(path_matches(&t, "/events/12/tiers/3/checkout"));
        assert!(!path_matches(&t, "/events/12/tiers/3/checkout/again"));
        assert!(!path_matches(&t, "/events/12/tiers/3"));
        assert!(path_matches(&segments("/healthz"), "/healthz"));
        assert!(path_matches(&segments("/healthz"), "/healthz/"));
        assert!(!path_matches(&segments("/healthz"), "/metrics"));
        assert!(path_matches(&segments("/static/{*rest}"), "/static/css/app.css"));
        assert!(route_matches(&t, "/events/{id}/tiers/{t}/checkout"));
        assert!(!route_matches(&t, "/events/special/tiers/{t}/checkout"), "a static segment is not a parameter");
        assert!(!route_matches(&segments("/static/{*rest}"), "/static/{file}"));
    }

    static ROOT: SpanSite =
        SpanSite { name: "unit.sampling.root", level: super::super::Level::Info, kind: super::super::Kind::Internal };
    static OTHER: SpanSite =
        SpanSite { name: "unit.other", level: super::super::Level::Info, kind: super::super::Kind::Internal };
    static SERVER: SpanSite =
        SpanSite { name: "GET", level: super::super::Level::Info, kind: super::super::Kind::Server };

    #[test]
    fn the_first_matching_rule_decides() {
        // A last rule matching everything, so that no case reaches the global ratio (which other
        // tests of this process set).
        let get = |path| Http { method: "GET", path, route: None };
        set_rules(&[
            SamplingRule::route("/healthz").never(),
            SamplingRule::route("/events/{event}/tiers/{tier}/checkout").method("POST").always(),
            SamplingRule::name("unit.sampling.*").always(),
            SamplingRule::route("/events/{event}").ratio(0.5),
            SamplingRule::any().never(),
        ]);
        let (low, high) = (0u128, u128::MAX); // below and above any ratio's threshold
        assert!(decide(high, &ROOT, None), "name rule");
        assert!(decide(high, &ROOT, None), "the same from the site's cached decision");
        assert!(!decide(low, &OTHER, None), "the catch-all");
        assert!(!decide(low, &SERVER, Some(&get("/healthz"))), "never, whatever the trace id");
        let post = Http { method: "POST", path: "/events/1/tiers/2/checkout", route: None };
        assert!(decide(high, &SERVER, Some(&post)));
        assert!(!decide(low, &SERVER, Some(&get("/events/1/tiers/2/checkout"))), "the method differs");
        assert!(
            decide(low, &SERVER, Some(&get("/events/7"))) && !decide(high, &SERVER, Some(&get("/events/7"))),
            "ratio"
        );
        let routed = Http { method: "POST", path: "/whatever", route: Some("/events/{event}/tiers/{tier}/checkout") };
        assert!(decide(high, &SERVER, Some(&routed)), "the route, when known, is matched as a template");
        // New rules replace the cached decisions: ROOT's cached index (rule 2) now names a rule
        // that decides the opposite of the rule that matches it.
        set_rules(&[
            SamplingRule::name("unit.sampling.*").never(),
            SamplingRule::any().always(),
            SamplingRule::any().always(),
        ]);
        assert!(!decide(low, &ROOT, None));
        assert!(decide(low, &OTHER, None));
        let renamed = Http { method: "POST", path: "/x", route: Some("/events/{id}/tiers/{t}/checkout") };
        set_rules(&[
            SamplingRule::route("/events/{event}/tiers/{tier}/checkout").never(),
            SamplingRule::any().always(),
        ]);
        assert!(!decide(low, &SERVER, Some(&renamed)), "parameters match whatever their names");
        set_rules(&[]);
        assert!(RULES.load(Ordering::Relaxed).is_null(), "no rules: the ratio alone decides");
    }
}
