//! Sampling rules: which root spans are sampled, by name, route and method, before the ratio.
//!
//! ```
//! use obs_runtime::config::{Config, SamplingRule};
//!
//! let config = Config::from_vars(|_| None).unwrap().sampling_rules([
//!     SamplingRule::route("/healthz").never(),
//!     SamplingRule::route("/events/{event}/tiers/{tier}/checkout").method("POST").always(),
//!     SamplingRule::name("report.*").ratio(0.01),
//! ]);
//! # drop(config);
//! // The same from the environment (`OBS_TRACES_SAMPLING_RULES`): rules separated by `;`, each
//! // its matchers then its decision.
//! let rules = "route=/healthz never; method=POST route=/events/{event}/tiers/{tier}/checkout always; name=report.* 0.01";
//! let parsed = SamplingRule::parse_list(rules).unwrap();
//! assert_eq!(parsed.len(), 3);
//! ```

use std::fmt;

/// What a matching rule decides for a root span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Sampled.
    Always,
    /// Not sampled (a failed or slow root is still kept when tail keeping is on).
    Never,
    /// This fraction, decided from the trace id as the sampler's ratio is.
    Ratio(f64),
}

/// One sampling rule: the root spans it matches, and what it decides for them.
///
/// Rules apply to the spans whose sampling this service decides: roots, and with a
/// non-parent-based sampler the first span of a caller's trace. A span whose parent decided
/// follows it (parent-based, the default). The first rule that matches decides; a root no rule
/// matches gets the sampler's ratio. Tail keeping (failed and slow roots) applies after them.
/// Every matcher given must match:
/// - `name`: the span's name, `*` standing for any characters (`report.*`, `*.checkout`);
/// - `route`: an HTTP route template (`/events/{event}`), matched against the route when the
///   server span knows it (parameters match parameters, whatever their names), else against the
///   request's path, a `{…}` segment matching any one segment and `{*…}` the rest (so
///   `/healthz` matches the path `/healthz`);
/// - `method`: an HTTP request method (`GET`, `POST`), upper case.
///
/// A rule with `route` or `method` matches only HTTP server spans. A server span's name is
/// `METHOD /route` when the layer sits inside the router (`Router::layer`), but only `METHOD`
/// when it wraps the router (`ObsLayer::wrap`: the route is learned later), so match server spans
/// by `route` rather than `name`. A background task's root that follows the trace that enqueued
/// it (parent-based, the default) is not decided by rules, as a child is not.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingRule {
    pub(crate) name: Option<String>,
    pub(crate) route: Option<String>,
    pub(crate) method: Option<String>,
    pub(crate) decision: Decision,
}

impl SamplingRule {
    /// A rule matching spans named `pattern` (`*` for any characters); decides
    /// [`Always`](Decision::Always) until told otherwise.
    pub fn name(pattern: impl Into<String>) -> SamplingRule {
        SamplingRule { name: Some(pattern.into()), route: None, method: None, decision: Decision::Always }
    }

    /// A rule matching HTTP server spans of the route `template` (`/events/{event}`).
    pub fn route(template: impl Into<String>) -> SamplingRule {
        SamplingRule { name: None, route: Some(template.into()), method: None, decision: Decision::Always }
    }

    /// A rule matching every root: the last rule of a list, to give the rest a ratio other than
    /// the sampler's.
    pub fn any() -> SamplingRule {
        SamplingRule { name: None, route: None, method: None, decision: Decision::Always }
    }

    /// Also requires the HTTP request method `method`.
    pub fn method(mut self, method: impl Into<String>) -> SamplingRule {
        self.method = Some(method.into().to_ascii_uppercase());
        self
    }

    /// Samples every matching root.
    pub fn always(mut self) -> SamplingRule {
        self.decision = Decision::Always;
        self
    }

    /// Samples no matching root.
    pub fn never(mut self) -> SamplingRule {
        self.decision = Decision::Never;
        self
    }

    /// Samples this fraction of matching roots.
    ///
    /// # Panics
    /// If `ratio` is not within 0 to 1.
    pub fn ratio(mut self, ratio: f64) -> SamplingRule {
        assert!((0.0..=1.0).contains(&ratio), "a sampling ratio is from 0 to 1, not {ratio}");
        self.decision = Decision::Ratio(ratio);
        self
    }

    /// Parses the compact form of `OBS_TRACES_SAMPLING_RULES`: rules separated by `;`, each
    /// whitespace-separated matchers (`name=…`, `route=…`, `method=…`) followed by its decision
    /// (`always`, `never` or a ratio from 0 to 1); a rule of a decision alone matches every root.
    ///
    /// ```
    /// use obs_runtime::config::{Decision, SamplingRule};
    /// let rules = SamplingRule::parse_list("route=/metrics never; 0.5").unwrap();
    /// assert_eq!(rules[0], SamplingRule::route("/metrics").never());
    /// assert_eq!(rules[1], SamplingRule::any().ratio(0.5));
    /// assert!(SamplingRule::parse_list("route=/metrics sometimes").is_err());
    /// ```
    pub fn parse_list(text: &str) -> Result<Vec<SamplingRule>, InvalidRule> {
        text.split(';').map(str::trim).filter(|r| !r.is_empty()).map(SamplingRule::parse_one).collect()
    }

    fn parse_one(text: &str) -> Result<SamplingRule, InvalidRule> {
        let invalid = |why: &'static str| InvalidRule { rule: text.to_owned(), why };
        let mut words: Vec<&str> = text.split_whitespace().collect();
        let decision = match words.pop() {
            Some("always") => Decision::Always,
            Some("never") => Decision::Never,
            Some(r) => match r.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Decision::Ratio(r),
                _ => {
                    return Err(invalid(
                        "rules separated by `;`, each ending with its decision: `always`, `never` or a ratio from 0 to 1",
                    ));
                }
            },
            None => return Err(invalid("a rule with a decision")),
        };
        let mut rule = SamplingRule { decision, ..SamplingRule::any() };
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| invalid("matchers `name=…`, `route=…` or `method=…` before the decision"))?;
            if value.is_empty() {
                return Err(invalid("a value after each matcher's `=`"));
            }
            let slot = match key {
                "name" => &mut rule.name,
                "route" => &mut rule.route,
                "method" => &mut rule.method,
                _ => return Err(invalid("matchers `name=…`, `route=…` or `method=…` before the decision")),
            };
            if slot.replace(value.to_owned()).is_some() {
                return Err(invalid("each matcher at most once per rule"));
            }
        }
        if let Some(route) = &rule.route
            && !route.starts_with('/')
        {
            return Err(invalid("a route that starts with `/`"));
        }
        rule.method = rule.method.map(|m| m.to_ascii_uppercase());
        Ok(rule)
    }
}

/// A sampling rule that does not parse; says which and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRule {
    /// The rule as written.
    pub rule: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl fmt::Display for InvalidRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sampling rule {:?}: {}", self.rule, self.why)
    }
}

impl std::error::Error for InvalidRule {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compact_form_parses_and_says_what_is_wrong() {
        let rules = SamplingRule::parse_list(
            " route=/healthz never ;method=post route=/events/{event}/tiers/{tier}/checkout always; name=report.* 0.01;; 0.2 ",
        )
        .unwrap();
        assert_eq!(
            rules,
            [
                SamplingRule::route("/healthz").never(),
                SamplingRule::route("/events/{event}/tiers/{tier}/checkout").method("POST").always(),
                SamplingRule::name("report.*").ratio(0.01),
                SamplingRule::any().ratio(0.2),
            ]
        );
        for (bad, why) in [
            ("route=/healthz", "decision"),
            ("route=/healthz 1.5", "decision"),
            ("path=/x never", "matchers"),
            ("route= never", "value"),
            ("route=healthz never", "starts with"),
            ("name=a name=b never", "at most once"),
        ] {
            let err = SamplingRule::parse_list(bad).unwrap_err();
            assert!(err.to_string().contains(why), "{bad}: {err}");
            assert!(err.to_string().contains(bad), "the rule is named: {err}");
        }
        assert_eq!(SamplingRule::parse_list("").unwrap(), []);
    }
}
