//! The metric catalog of Revel, the reference service (`examples/revel/metrics.toml`), holds every
//! metric of the original design (SPEC.md, "The metric catalog") with the labels it lists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use obs_catalog::{Catalog, Kind, Metric, ValueKind};

/// Every metric named in SPEC.md, "The metric catalog", in its order.
const SPEC_METRICS: &[&str] = &[
    // events
    "revel_events_created_total",
    "revel_events_active",
    "revel_events_cancelled_total",
    // tickets
    "revel_tickets_sold_total",
    "revel_tickets_checked_in_total",
    "revel_tickets_cancelled_total",
    // SPEC.md: `revel_ticket_tiers_by_type`, a counter; counters end in `_total` (as the original's
    // Python client exposed it).
    "revel_ticket_tiers_by_type_total",
    // payments
    "revel_payments_total",
    "revel_revenue_total",
    "revel_platform_fees_total",
    "revel_payment_checkout_sessions_created_total",
    "revel_payment_checkout_sessions_expired_total",
    "revel_stripe_webhooks_processed_total",
    // users
    "revel_users_registered_total",
    "revel_users_active_weekly",
    // questionnaires
    "revel_questionnaires_created_total",
    "revel_questionnaire_submissions_total",
    "revel_questionnaire_evaluations_total",
    "revel_questionnaire_pass_rate",
    "revel_llm_evaluation_duration_seconds",
    "revel_llm_tokens_consumed_total",
    "revel_llm_evaluation_cost_total",
    // email / notifications
    "revel_emails_sent_total",
    "revel_email_delivery_rate",
    "revel_notifications_sent_total",
    // membership
    "revel_organization_members",
    "revel_membership_requests_total",
    // system
    "revel_api_requests_total",
    "revel_api_request_duration_seconds",
    "revel_database_query_duration_seconds",
    "revel_celery_tasks_total",
    "revel_celery_task_duration_seconds",
    "revel_celery_queue_depth",
];

/// What the catalog adds after the SPEC's metrics: the database pool (issue 17; the seed alerts on
/// pool exhaustion but named no metric for it), outgoing calls, Redis and the bounded queue.
const ADDED_METRICS: &[&str] = &[
    "revel_database_pool_connections",
    "revel_database_pool_max_connections",
    "revel_database_pool_pending_acquires",
    "revel_database_pool_acquire_duration_seconds",
    "revel_database_pool_acquire_timeouts_total",
    "revel_external_request_duration_seconds",
    "revel_redis_command_duration_seconds",
    "revel_cache_requests_total",
    "revel_celery_tasks_dropped_total",
];

fn catalog_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/revel/metrics.toml")
}

fn catalog() -> Catalog {
    match Catalog::load(&catalog_path()) {
        Ok(catalog) => catalog,
        Err(err) => panic!("the Revel catalog is invalid:\n{err}"),
    }
}

fn metric<'a>(catalog: &'a Catalog, name: &str) -> &'a Metric {
    catalog.get(name).unwrap_or_else(|| panic!("`{name}` is missing from the Revel catalog"))
}

#[test]
fn parses_without_problems() {
    let catalog = catalog();
    assert_eq!(catalog.metrics().len(), SPEC_METRICS.len() + ADDED_METRICS.len());
}

#[test]
fn holds_exactly_the_spec_metrics_in_spec_order() {
    assert_eq!(SPEC_METRICS.len(), 33, "SPEC.md lists 33 metrics");
    let catalog = catalog();
    let names: Vec<&str> = catalog.metrics().iter().map(|m| m.name.as_str()).collect();
    let expected: BTreeSet<&str> = SPEC_METRICS.iter().chain(ADDED_METRICS).copied().collect();
    let actual: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(expected.len(), SPEC_METRICS.len() + ADDED_METRICS.len(), "duplicate in the test's list");
    let missing: Vec<_> = expected.difference(&actual).collect();
    let extra: Vec<_> = actual.difference(&expected).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing: {missing:?}, not in SPEC.md: {extra:?}");
    // The file is grouped by area in the SPEC's order, the additions after.
    assert_eq!(names, [SPEC_METRICS, ADDED_METRICS].concat());
}

#[test]
fn key_metrics_have_the_seed_labels_and_kinds() {
    let catalog = catalog();
    let cases: &[(&str, Kind, &[&str])] = &[
        ("revel_tickets_sold_total", Kind::Counter, &["organization_id", "event_id", "tier_id", "payment_method"]),
        ("revel_payments_total", Kind::Counter, &["organization_id", "status", "payment_method"]),
        ("revel_stripe_webhooks_processed_total", Kind::Counter, &["webhook_type", "status"]),
        ("revel_api_requests_total", Kind::Counter, &["method", "endpoint", "status_code"]),
        ("revel_api_request_duration_seconds", Kind::Histogram, &["method", "endpoint"]),
        ("revel_celery_tasks_total", Kind::Counter, &["task_name", "status"]),
        ("revel_revenue_total", Kind::Counter, &["organization_id", "currency"]),
        // Listed without labels in the seed.
        ("revel_events_active", Kind::Gauge, &[]),
        ("revel_users_active_weekly", Kind::Gauge, &[]),
        ("revel_payment_checkout_sessions_created_total", Kind::Counter, &[]),
        ("revel_llm_evaluation_duration_seconds", Kind::Histogram, &[]),
        ("revel_email_delivery_rate", Kind::Gauge, &[]),
        // The seed's types, even where the name suggests otherwise.
        ("revel_ticket_tiers_by_type_total", Kind::Counter, &["organization_id", "payment_method"]),
        ("revel_organization_members", Kind::Gauge, &["organization_id"]),
    ];
    for &(name, kind, labels) in cases {
        let m = metric(&catalog, name);
        assert_eq!(m.kind, kind, "kind of `{name}`");
        assert_eq!(m.labels, labels, "labels of `{name}`");
    }
}

#[test]
fn amounts_are_float_counters_and_token_counts_integer() {
    let catalog = catalog();
    let floats: Vec<&str> = catalog
        .metrics()
        .iter()
        .filter(|m| m.kind == Kind::Counter && m.value == ValueKind::Float)
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(floats, ["revel_revenue_total", "revel_platform_fees_total", "revel_llm_evaluation_cost_total"]);
    assert_eq!(metric(&catalog, "revel_llm_tokens_consumed_total").value, ValueKind::Integer);
    for name in floats {
        assert!(metric(&catalog, name).help.contains("major unit"), "help of `{name}` names the unit");
    }
}

#[test]
fn histograms_are_in_seconds_with_buckets_at_the_alert_thresholds() {
    let catalog = catalog();
    let histograms: Vec<&Metric> = catalog.metrics().iter().filter(|m| m.kind == Kind::Histogram).collect();
    assert_eq!(histograms.len(), 7);
    for m in &histograms {
        assert_eq!(m.unit.as_deref(), Some("seconds"), "unit of `{}`", m.name);
        assert!(m.buckets.len() >= 8, "`{}` declares its own buckets", m.name);
    }
    let api = metric(&catalog, "revel_api_request_duration_seconds");
    assert!(api.buckets.contains(&2.0), "API p95 > 2 s alert needs a 2 s bucket: {:?}", api.buckets);
    let llm = metric(&catalog, "revel_llm_evaluation_duration_seconds");
    assert!(llm.buckets.contains(&10.0), "LLM > 10 s alert needs a 10 s bucket: {:?}", llm.buckets);
    let db = metric(&catalog, "revel_database_query_duration_seconds");
    assert!(db.buckets[0] < api.buckets[0], "database buckets are finer than the API's");
    assert!(db.buckets.contains(&5.0), "slow queries > 5 s alert needs a 5 s bucket: {:?}", db.buckets);
    let task = metric(&catalog, "revel_celery_task_duration_seconds");
    assert_eq!(task.buckets.last(), Some(&300.0));
}

#[test]
fn high_cardinality_families_have_an_explicit_series_cap() {
    let catalog = catalog();
    for m in catalog.metrics() {
        let per_entity = m.labels.iter().any(|l| matches!(l.as_str(), "event_id" | "tier_id" | "questionnaire_id"));
        let per_org = m.labels.iter().any(|l| l == "organization_id");
        let expected = if per_entity {
            Some(20_000)
        } else if per_org {
            Some(5_000)
        } else {
            None
        };
        assert_eq!(m.series_cap, expected, "series_cap of `{}`", m.name);
    }
}

#[test]
fn help_is_single_line_ascii() {
    for m in catalog().metrics() {
        assert!(m.help.is_ascii() && !m.help.contains('\n'), "help of `{}`: {:?}", m.name, m.help);
    }
}
