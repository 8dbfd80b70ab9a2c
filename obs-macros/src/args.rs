//! The grammar of `#[counted(..)]` and `#[timed(..)]`, as darling structs.

use darling::ast::NestedMeta;
use darling::util::SpannedValue;
use darling::{Error, FromMeta};
use syn::{Expr, Ident, Lit, LitStr, Meta};

/// `#[counted(metric = "..", labels(..), only = "ok", outcome(..), crate = path)]`
/// `#[timed(metric = "..", labels(..), only = "ok", outcome(..), crate = path)]`
#[derive(FromMeta)]
pub struct RecordArgs {
    /// The catalog metric, as a string literal.
    pub metric: MetricName,
    /// Label values: `labels(name = expr, ..)`; literals or expressions over the arguments.
    #[darling(default)]
    pub labels: Labels,
    /// Record only successful (`"ok"`) or only failed (`"err"`) calls of a function returning
    /// `Result`.
    pub only: Option<SpannedValue<Only>>,
    /// Derive a label from the outcome: `outcome(label = "status", ok = "success", err = "failure")`.
    pub outcome: Option<SpannedValue<OutcomeArgs>>,
    /// Path to `obs_runtime`, for crates that re-export it.
    #[darling(rename = "crate")]
    pub krate: Option<syn::Path>,
}

/// `only = "ok"` | `only = "err"`
#[derive(FromMeta, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    #[darling(rename = "ok")]
    Ok,
    #[darling(rename = "err")]
    Err,
}

/// `outcome(label = "status", ok = "success", err = "failure")`; `ok`/`err` default to
/// `"success"`/`"failure"`.
#[derive(FromMeta)]
pub struct OutcomeArgs {
    pub label: LitStr,
    pub ok: Option<LitStr>,
    pub err: Option<LitStr>,
}

/// A metric name: must be a string literal, so the macro can check it.
pub struct MetricName(pub LitStr);

impl FromMeta for MetricName {
    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        match expr {
            Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) => Ok(MetricName(s.clone())),
            Expr::Group(g) => Self::from_expr(&g.expr),
            other => Err(Error::custom(
                "expected a string literal naming a metric of the catalog, e.g. `metric = \"app_requests_total\"`: \
                 the name is checked at compile time, so it cannot be computed",
            )
            .with_span(other)),
        }
    }
}

/// One `name = value` of `labels(..)`.
pub struct Label {
    pub name: Ident,
    pub value: LabelValue,
}

pub enum LabelValue {
    /// A literal, resolved once per call site.
    Literal(String),
    /// An expression evaluated when the function is entered.
    Expr(Expr),
}

#[derive(Default)]
pub struct Labels {
    /// The `labels` keyword, for errors about missing labels.
    pub span: Option<proc_macro2::Span>,
    pub items: Vec<Label>,
}

impl FromMeta for Labels {
    fn from_meta(item: &Meta) -> darling::Result<Self> {
        let list = match item {
            Meta::List(list) => list,
            other => {
                return Err(Error::custom("expected `labels(name = value, ..)`").with_span(other));
            }
        };
        let nested = NestedMeta::parse_meta_list(list.tokens.clone())?;
        let mut errors = Error::accumulator();
        let mut items = Vec::new();
        for meta in nested {
            match meta {
                // labels(name = value)
                NestedMeta::Meta(Meta::NameValue(nv)) if nv.path.get_ident().is_some() => {
                    let name = nv.path.get_ident().cloned().expect("checked above");
                    let value = match &nv.value {
                        Expr::Lit(syn::ExprLit { lit, .. }) => match lit {
                            Lit::Str(s) => LabelValue::Literal(s.value()),
                            Lit::Int(i) => LabelValue::Literal(i.base10_digits().to_owned()),
                            Lit::Bool(b) => LabelValue::Literal(b.value.to_string()),
                            Lit::Char(c) => LabelValue::Literal(c.value().to_string()),
                            _ => LabelValue::Expr(nv.value.clone()),
                        },
                        e => LabelValue::Expr(e.clone()),
                    };
                    items.push(Label { name, value });
                }
                other => errors.push(
                    Error::custom(
                        "expected `name = value`, where `value` is a literal or an expression over the arguments",
                    )
                    .with_span(&other),
                ),
            }
        }
        errors.finish_with(Labels { span: Some(list.path.span()), items })
    }
}

use syn::spanned::Spanned as _;
