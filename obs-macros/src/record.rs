//! `#[counted]` and `#[timed]`: parse → check → expand.

use darling::FromMeta;
use darling::ast::NestedMeta;
use obs_catalog::{Kind, Metric};
use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, ItemFn, LitStr};

use crate::args::{LabelValue, Only, RecordArgs};
use crate::{catalog, check, wrap};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Recorder {
    /// `#[counted]`: one increment per call.
    Count,
    /// `#[timed]`: the call's duration in seconds, into a histogram.
    Time,
}

/// A label's value in catalog order.
enum Slot {
    Literal(String),
    Expr(Expr),
    Outcome,
}

struct Plan {
    krate: syn::Path,
    metric: Metric,
    slots: Vec<Slot>,
    /// The outcome label's values for success and failure.
    outcome: Option<(String, String)>,
    outcome_label: Option<String>,
    only: Option<Only>,
    tracking: TokenStream,
    /// For links to Grafana's Explore in the documentation.
    links: obs_catalog::Links,
}

pub fn expand(recorder: Recorder, args: TokenStream, item: TokenStream) -> TokenStream {
    expand_as(crate::ENABLED, recorder, args, item)
}

/// `enabled`: whether to record; if not, the arguments are checked against the catalog all the
/// same and the item is left as it is, but for the catalog's tracking and its label expressions
/// borrowed in a branch never taken (so an argument used only there is not reported unused).
pub(crate) fn expand_as(enabled: bool, recorder: Recorder, args: TokenStream, item: TokenStream) -> TokenStream {
    let item_fn: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let what = if recorder == Recorder::Count { "#[counted]" } else { "#[timed]" };
            return check::not_a_function(what, &item);
        }
    };
    match plan(recorder, args.clone(), &item_fn) {
        Ok(plan) if !enabled => {
            let mut item_fn = item_fn;
            item_fn.attrs.extend(promql_doc(recorder, &plan));
            let uses = label_uses(args, &item_fn);
            let tracking = &plan.tracking;
            let unused: syn::Stmt = syn::parse_quote!(if false { #(#uses)* });
            let tracking: Vec<syn::Stmt> = syn::parse_quote!(#tracking);
            item_fn.block.stmts.splice(0..0, tracking.into_iter().chain((!uses.is_empty()).then_some(unused)));
            item_fn.into_token_stream()
        }
        Ok(plan) => generate(recorder, &plan, item_fn),
        Err(errors) => {
            let errors = errors.into_iter().map(|e| e.to_compile_error());
            // The item stays, so one mistake does not cascade into "cannot find function"; its
            // label expressions stay too, so an argument used only there is not reported unused
            // and a mistake in one is not hidden until the first is fixed.
            let mut item_fn = item_fn;
            let uses = label_uses(args, &item_fn);
            item_fn.block.stmts.splice(0..0, uses);
            quote!(#(#errors)* #item_fn)
        }
    }
}

/// `let _ = &(expr);` for each label expression of the attribute's arguments, for the start of the
/// body when the attribute has an error: evaluated by reference where the expansion would evaluate
/// it, so it moves and borrows what the instrumented function would, and nothing more. Read again
/// from the arguments (cheap), since the error may have come before `labels(..)` was read; left
/// out are the expressions naming something that is not an argument, already an error, which
/// would only add "cannot find value" to it.
fn label_uses(args: TokenStream, item: &ItemFn) -> Vec<syn::Stmt> {
    let Ok(metas) = NestedMeta::parse_meta_list(args) else { return Vec::new() };
    let labels = metas.iter().find_map(|m| match m {
        NestedMeta::Meta(m) if m.path().is_ident("labels") => crate::args::Labels::from_meta(m).ok(),
        _ => None,
    });
    let arg_names = check::argument_names(&item.sig);
    let mut uses = Vec::new();
    for label in labels.map(|l| l.items).unwrap_or_default() {
        let LabelValue::Expr(e) = label.value else { continue };
        let mut errors = Vec::new();
        check::expression_uses_arguments(&e, &arg_names, &item.sig.ident, &mut errors);
        if errors.is_empty() {
            uses.push(syn::parse_quote_spanned! {e.span()=> let _ = &(#e);});
        }
    }
    uses
}

fn plan(recorder: Recorder, args: TokenStream, item: &ItemFn) -> Result<Plan, Vec<syn::Error>> {
    let metas = NestedMeta::parse_meta_list(args).map_err(|e| vec![e])?;
    let args = RecordArgs::from_list(&metas).map_err(|e| vec![syn::Error::from(e)])?;
    let RecordArgs { metric: name, labels, only, outcome, krate } = args;
    let name: LitStr = name.0;
    let loaded = catalog::load();
    // After the first use, a catalog error leaves no error here: the item compiles as it is.
    let catalog = loaded.catalog_or_errors(name.span())?;
    let metric = check::metric(catalog, &name).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    check_recorder(recorder, metric, &name, item, &mut errors).map_err(|e| vec![e])?;

    let mut given: Vec<(String, Span)> =
        labels.items.iter().map(|l| (syn::ext::IdentExt::unraw(&l.name).to_string(), l.name.span())).collect();
    let outcome = outcome.map(|o| {
        let span = o.span();
        let o = o.into_inner();
        given.push((o.label.value(), o.label.span()));
        let ok = o.ok.map_or_else(|| "success".to_owned(), |s| s.value());
        let err = o.err.map_or_else(|| "failure".to_owned(), |s| s.value());
        (o.label.value(), ok, err, span)
    });
    // A missing label could come from the outcome when there is one to take it from.
    let outcome_could_supply = outcome.is_none() && check::returns_result(&item.sig);
    check::labels(metric, &given, labels.span.unwrap_or(name.span()), outcome_could_supply, &mut errors);
    let arg_names = check::argument_names(&item.sig);
    for l in &labels.items {
        if let LabelValue::Expr(e) = &l.value {
            check::expression_uses_arguments(e, &arg_names, &item.sig.ident, &mut errors);
        }
    }
    if item.sig.constness.is_some() {
        errors.push(syn::Error::new(item.sig.constness.span(), "a `const fn` cannot record metrics"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let slots = slots_of(metric, &labels.items, outcome.as_ref().map(|o| o.0.as_str()));
    Ok(Plan {
        krate: krate.unwrap_or_else(|| syn::parse_quote!(::obs_runtime)),
        metric: metric.clone(),
        slots,
        outcome_label: outcome.as_ref().map(|o| o.0.clone()),
        outcome: outcome.map(|(_, ok, err, _)| (ok, err)),
        only: only.map(|o| *o),
        tracking: loaded.tracking(),
        links: catalog.links().clone(),
    })
}

/// The checks that depend on the attribute: the metric's kind (returned at once: nothing else
/// is worth checking against a metric of the wrong kind), and for `#[timed]` a unit of seconds
/// and a body that is the work (not a future's creation), into `errors`.
fn check_recorder(
    recorder: Recorder,
    metric: &Metric,
    name: &LitStr,
    item: &ItemFn,
    errors: &mut Vec<syn::Error>,
) -> Result<(), syn::Error> {
    match recorder {
        Recorder::Count => check::kind(
            metric,
            name,
            "#[counted]",
            Kind::Counter,
            match metric.kind {
                Kind::Histogram => "use `#[timed]` for durations, or `metric!(..).observe(..)`",
                _ => "use `metric!(..).inc()` / `.set(..)` for a gauge",
            },
        )?,
        Recorder::Time => check::kind(
            metric,
            name,
            "#[timed]",
            Kind::Histogram,
            "declare a histogram with `unit = \"seconds\"`; count calls with `#[counted]`",
        )?,
    }
    if recorder == Recorder::Count {
        return Ok(());
    }
    if item.sig.asyncness.is_none()
        // `#[async_trait]`'s own shape is timed to the future's completion (see `generate`).
        && wrap::async_trait_body(&item.sig, &item.block).is_none()
        && let Some(ty) = returns_impl_future(&item.sig.output)
    {
        // The body only builds the future: timing it would record nanoseconds, silently.
        errors.push(syn::Error::new(
            ty.span(),
            "#[timed] on a function returning a future would time only the creation of the future\n\
             help: write it as an `async fn`, or time the `async` block inside with `metric!(..).observe(..)`",
        ));
    }
    match metric.unit.as_deref() {
        Some("seconds") => {}
        Some(unit) => errors.push(syn::Error::new(
            name.span(),
            format!("`#[timed]` records seconds, and `{}` is in `{unit}`", metric.name),
        )),
        None => errors.push(syn::Error::new(
            name.span(),
            format!(
                "`#[timed]` records seconds, and `{}` declares no unit\nhelp: if it is a duration, add `unit = \"seconds\"` to its entry in metrics.toml",
                metric.name
            ),
        )),
    }
    Ok(())
}

/// Each catalog label's value, in catalog order: the outcome's label, or the literal or
/// expression given (all present: checked before).
fn slots_of(metric: &Metric, labels: &[crate::args::Label], outcome_label: Option<&str>) -> Vec<Slot> {
    metric
        .labels
        .iter()
        .map(|declared| {
            if outcome_label == Some(declared.as_str()) {
                return Slot::Outcome;
            }
            let label = labels
                .iter()
                .find(|l| syn::ext::IdentExt::unraw(&l.name) == declared)
                .expect("checked: no missing label");
            match &label.value {
                LabelValue::Literal(s) => Slot::Literal(s.clone()),
                LabelValue::Expr(e) => Slot::Expr(e.clone()),
            }
        })
        .collect()
}

/// The return type, if it is `impl Future<..>` (or `Pin<Box<dyn Future<..>>>`, as `async-trait`
/// writes it).
fn returns_impl_future(output: &syn::ReturnType) -> Option<&syn::Type> {
    let syn::ReturnType::Type(_, ty) = output else { return None };
    let is_future_bound = |b: &syn::TypeParamBound| matches!(b, syn::TypeParamBound::Trait(t) if t.path.segments.last().is_some_and(|s| s.ident == "Future"));
    let found = match &**ty {
        syn::Type::ImplTrait(it) => it.bounds.iter().any(is_future_bound),
        syn::Type::Path(p) => p.path.segments.last().is_some_and(|s| {
            s.ident == "Pin"
                && matches!(&s.arguments, syn::PathArguments::AngleBracketed(a)
                    if a.args.iter().any(|arg| matches!(arg,
                        syn::GenericArgument::Type(syn::Type::Path(b)) if b.path.segments.last().is_some_and(|s| {
                            s.ident == "Box" && matches!(&s.arguments, syn::PathArguments::AngleBracketed(a)
                                if a.args.iter().any(|arg| matches!(arg,
                                    syn::GenericArgument::Type(syn::Type::TraitObject(o)) if o.bounds.iter().any(is_future_bound))))
                        }))))
        }),
        _ => false,
    };
    found.then_some(&**ty)
}

/// The `static` definition of the metric for the runtime.
pub fn def_item(krate: &syn::Path, metric: &Metric) -> TokenStream {
    let def = def_expr(krate, metric);
    quote!(static __OBS_DEF: #krate::__private::MetricDef = #def;)
}

/// The definition of the metric as a constant expression.
pub fn def_expr(krate: &syn::Path, metric: &Metric) -> TokenStream {
    let name = &metric.name;
    let help = &metric.help;
    let kind = format_ident!("{}", metric.recorded().type_name());
    let labels = &metric.labels;
    let buckets = metric.buckets.iter().map(|b| proc_macro2::Literal::f64_suffixed(*b));
    let cap = metric.series_cap.unwrap_or(0);
    quote! {
        #krate::__private::MetricDef {
            name: #name,
            help: #help,
            kind: #krate::__private::MetricKind::#kind,
            labels: &[#(#labels),*],
            buckets: &[#(#buckets),*],
            series_cap: #cap,
        }
    }
}

/// Declares `__obs_key` and `__obs_pos` (the outcome's place in the key, when it has one), and
/// runs `stmts` (from [`key_stmts`]) into the key only while metrics are on (`__obs_on`). The key
/// is declared outside the branch and filled in place: a key built inside it and moved out was
/// copied whole (its 232 bytes, a `memcpy` per call).
fn gated_key(krate: &syn::Path, stmts: TokenStream, outcome: bool) -> TokenStream {
    let pos = if outcome { quote!(__obs_pos) } else { quote!(0usize) };
    quote! {
        #[allow(unused_mut, unused_variables)]
        let mut __obs_key = #krate::__private::KeyBuf::new();
        #[allow(unused_variables)]
        let __obs_pos = if __obs_on {
            #stmts
            #pos
        } else {
            0usize
        };
    }
}

/// `obs_runtime::__private::MAX_RAW`: the most label expressions a site looks up by raw value.
const MAX_RAW: usize = 4;

/// Whether `e` only names a value: a variable, a field of one (through `*` and parentheses), a
/// literal, or a cast of one. Such a label is read without side effects, temporaries that live on,
/// locks or `&mut` borrows, so it may be bound for the length of the key's statements: the raw
/// path ([`raw_key`]) is taken only when every label expression is one.
fn is_plain_value(e: &Expr) -> bool {
    match e {
        Expr::Path(p) => p.qself.is_none(),
        Expr::Lit(_) => true,
        Expr::Field(f) => is_plain_value(&f.base),
        Expr::Paren(p) => is_plain_value(&p.expr),
        Expr::Group(g) => is_plain_value(&g.expr),
        Expr::Cast(c) => is_plain_value(&c.expr),
        Expr::Unary(u) => matches!(u.op, syn::UnOp::Deref(_) | syn::UnOp::Neg(_)) && is_plain_value(&u.expr),
        _ => false,
    }
}

/// The call site's key for labels that all name plain values (see [`is_plain_value`]), without an
/// outcome label: each read once; when all are integers, the site's index by raw values is tried
/// on entry (a lookup only: nothing is created or counted), and only on a miss is the key
/// formatted. `__obs_found` holds a hit; the series expression (evaluated where the call is
/// recorded, as on the key path) takes it, or resolves the key and remembers it under the raws.
fn raw_key(krate: &syn::Path, slots: &[Slot]) -> TokenStream {
    let mut binds = Vec::new();
    let mut raws = Vec::new();
    let mut pushes = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        match slot {
            Slot::Literal(lit) => pushes.push(quote!(__obs_k.push_str(#lit);)),
            Slot::Expr(e) => {
                // Spanned at the user's expression, so that errors about it ("doesn't implement
                // Display") land there.
                let v = format_ident!("__obs_v{i}", span = e.span());
                // `let x = &(..);` keeps a cast's or a negation's value (an integer) alive.
                binds.push(quote_spanned! {e.span()=>
                    let #v = &(#e);
                    let #v = #krate::__private::label_value(#v);
                });
                raws.push(quote_spanned!(e.span()=> (&#krate::__private::LabelArg(#v)).__obs_raw()));
                pushes.push(quote_spanned!(e.span()=> (&#krate::__private::LabelArg(#v)).__obs_push(&mut __obs_k);));
            }
            Slot::Outcome => unreachable!("only without an outcome"),
        }
    }
    let names: Vec<_> = (0..raws.len()).map(|i| format_ident!("__obs_r{i}")).collect();
    let zeros: Vec<_> = (raws.len()..MAX_RAW).map(|_| quote!(0u64)).collect();
    quote! {
        // The key, formatted on a miss only (a hit builds no key, and drops none).
        let mut __obs_key: ::std::option::Option<#krate::__private::KeyBuf> = ::std::option::Option::None;
        let mut __obs_raws: ::std::option::Option<[u64; #MAX_RAW]> = ::std::option::Option::None;
        let __obs_found: ::std::option::Option<&'static #krate::__private::Series> = if __obs_on {
            #[allow(unused_imports)]
            use #krate::__private::{DisplayLabel as _, FastLabel as _, NoRawLabel as _, RawLabel as _};
            #(#binds)*
            __obs_raws = match (#(#raws,)*) {
                (#(::std::option::Option::Some(#names),)*) => ::std::option::Option::Some([#(#names,)* #(#zeros),*]),
                _ => ::std::option::Option::None,
            };
            let __obs_hit = match __obs_raws {
                ::std::option::Option::Some(r) => __OBS_SITE.raw_series(r),
                ::std::option::Option::None => ::std::option::Option::None,
            };
            if __obs_hit.is_none() {
                let mut __obs_k = #krate::__private::KeyBuf::new();
                #(#pushes)*
                __obs_key = ::std::option::Option::Some(__obs_k);
            }
            __obs_hit
        } else {
            ::std::option::Option::None
        };
    }
}

/// Statements that format the non-literal label values into `__obs_key` (and remember where the
/// outcome's value goes in `__obs_pos`).
pub fn key_prelude(
    krate: &syn::Path,
    slots: impl Iterator<Item = (Option<Expr>, Option<String>, bool)>,
) -> TokenStream {
    let stmts = key_stmts(krate, slots);
    quote! {
        let mut __obs_key = #krate::__private::KeyBuf::new();
        #stmts
    }
}

/// [`key_prelude`] without the declaration of `__obs_key`: the statements that fill it.
pub fn key_stmts(krate: &syn::Path, slots: impl Iterator<Item = (Option<Expr>, Option<String>, bool)>) -> TokenStream {
    let stmts = label_stmts(krate, slots);
    quote! {
        #[allow(unused_imports)]
        use #krate::__private::{DisplayLabel as _, FastLabel as _};
        #(#stmts)*
    }
}

/// One statement per label slot, pushing its value onto `__obs_key`.
fn label_stmts(
    krate: &syn::Path,
    slots: impl Iterator<Item = (Option<Expr>, Option<String>, bool)>,
) -> Vec<TokenStream> {
    let mut stmts = Vec::new();
    for (expr, literal, outcome) in slots {
        if outcome {
            stmts.push(quote!(let __obs_pos = __obs_key.len();));
        } else if let Some(lit) = literal {
            stmts.push(quote!(__obs_key.push_str(#lit);));
        } else if let Some(e) = expr {
            // Spanned at the user's expression, so "doesn't implement Display" lands there.
            stmts.push(quote_spanned! {e.span()=>
                (&#krate::__private::LabelArg(#krate::__private::label_value(&(#e)))).__obs_push(&mut __obs_key);
            });
        }
    }
    stmts
}

fn generate(recorder: Recorder, plan: &Plan, item: ItemFn) -> TokenStream {
    let Plan { krate, outcome, only, tracking, .. } = plan;
    let (items, prelude, series) = series_of(plan);
    // What every shape starts with: the catalog's tracking, the call site, the gate, the key.
    let head = quote! {
        #tracking
        #items
        let __obs_on = #krate::__private::metrics_on();
        #prelude
    };
    let (start, record) = start_and_record(recorder, krate, &series);
    // Whether this call is recorded (`only`).
    let recorded = match only {
        None => quote!(__obs_on),
        Some(Only::Ok) => quote!(__obs_on && __obs_ok),
        Some(Only::Err) => quote!(__obs_on && !__obs_ok),
    };
    let needs_outcome = outcome.is_some() || only.is_some();
    let ItemFn { mut attrs, vis, sig, block, .. } = item;
    attrs.extend(promql_doc(recorder, plan));
    let async_trait = wrap::async_trait_body(&sig, &block);
    let body = if let Some((before, future)) = async_trait.filter(|_| needs_outcome || recorder == Recorder::Time) {
        // A method that `#[async_trait]` (on the impl, so expanded first) turned into a function
        // returning `Box::pin(async move { .. })`: timed and classified when the future completes,
        // not when the call makes it. (A plain count is taken at the call, as below.)
        // Read from the output only where an outcome is asked for: any output can be timed.
        let is_ok = if needs_outcome { quote!(#krate::__private::is_success(&__obs_out)) } else { quote!(true) };
        quote! {{
            #head
            // The inner future made now, in a scope of its own: another attribute's expansion
            // (its statics, its bindings) stays inside.
            let __obs_inner = { #(#before)* #future };
            ::std::boxed::Box::pin(async move {
                #start
                let __obs_out = __obs_inner.await;
                #[allow(unused_variables)]
                let __obs_ok: bool = #is_ok;
                if #recorded {
                    #record
                }
                __obs_out
            })
        }}
    } else if !needs_outcome {
        // No outcome needed: record on entry (count) or when the body's scope ends (time), and
        // leave the user's block as it is.
        let record = match recorder {
            Recorder::Count => quote!(if __obs_on { (#series).inc(); }),
            Recorder::Time => quote! {
                let __obs_timer = if __obs_on { Some(#krate::__private::Timer::start(#series)) } else { None };
            },
        };
        quote!({ #head #record #block })
    } else {
        let call = wrap::call_block(krate, &sig, &block);
        let ret_span = match &sig.output {
            syn::ReturnType::Type(_, t) => t.span(),
            syn::ReturnType::Default => sig.ident.span(),
        };
        let is_ok = quote_spanned!(ret_span=> #krate::__private::is_success(&__obs_out));
        quote! {{
            #head
            #start
            let __obs_out = #call;
            let __obs_ok: bool = #is_ok;
            if #recorded {
                #record
            }
            __obs_out
        }}
    };
    let mut out = TokenStream::new();
    for a in attrs {
        a.to_tokens(&mut out);
    }
    quote!(#out #vis #sig #body)
}

/// The PromQL of what the attribute records, appended to the function's documentation, so that
/// rustdoc shows the queries next to the code (as autometrics did): a paragraph per attribute.
fn promql_doc(recorder: Recorder, plan: &Plan) -> Vec<syn::Attribute> {
    let m = &plan.metric;
    let name = &m.name;
    // A query in code, and a link to Grafana's Explore on it when the catalog says where Grafana is.
    let query = |expr: &str| match plan.links.explore(expr) {
        Some(url) => format!("`{expr}` ([Explore]({url}))"),
        None => format!("`{expr}`"),
    };
    let text = match recorder {
        Recorder::Count => {
            let calls = match plan.only {
                Some(Only::Ok) => "Successful calls",
                Some(Only::Err) => "Failed calls",
                None => "Calls",
            };
            let mut text = format!("{calls} are counted in `{name}`. Per second: {}", query(&m.base_query()));
            if let (Some(label), Some((_, err))) = (&plan.outcome_label, &plan.outcome) {
                let ratio = format!("sum(rate({name}{{{label}=\"{err}\"}}[5m])) / sum(rate({name}[5m]))");
                text.push_str(&format!("; failure ratio: {}", query(&ratio)));
            }
            text
        }
        Recorder::Time => {
            let mean = format!("sum(rate({name}_sum[5m])) / sum(rate({name}_count[5m]))");
            format!(
                "Durations are observed in `{name}`. 95th percentile: {}; mean: {}",
                query(&m.base_query()),
                query(&mean)
            )
        }
    };
    let text = format!("**Metrics.** {text}.");
    vec![syn::parse_quote!(#[doc = ""]), syn::parse_quote!(#[doc = #text])]
}

/// What starts before the call (a timer's start) and what records into `series` once the
/// outcome is known.
fn start_and_record(recorder: Recorder, krate: &syn::Path, series: &TokenStream) -> (TokenStream, TokenStream) {
    match recorder {
        Recorder::Count => (quote!(), quote!((#series).inc();)),
        Recorder::Time => (
            quote!(let __obs_start = __obs_on.then(#krate::__private::now);),
            quote! {
                if let Some(__obs_start) = __obs_start {
                    (#series).observe(#krate::__private::elapsed_seconds(__obs_start));
                }
            },
        ),
    }
}

/// Whether a site's label expressions may take the raw path: at most [`MAX_RAW`], all plain values.
fn plain_values(slots: &[Slot]) -> bool {
    let exprs = || slots.iter().filter_map(|s| if let Slot::Expr(e) = s { Some(e) } else { None });
    exprs().count() <= MAX_RAW && exprs().all(is_plain_value)
}

/// The call site's items (the definition, its site or sites), the statements that build the
/// series' key (only while metrics are on), and the expression of the series to record into once
/// the outcome (`__obs_ok`) is known. All-literal labels resolve their series once; with an
/// outcome label, one series per outcome.
fn series_of(plan: &Plan) -> (TokenStream, TokenStream, TokenStream) {
    let Plan { krate, metric, slots, outcome, .. } = plan;
    let def = def_item(krate, metric);
    let has_expr = slots.iter().any(|s| matches!(s, Slot::Expr(_)));
    let literals = |outcome_value: Option<&str>| -> Vec<String> {
        slots
            .iter()
            .map(|s| match s {
                Slot::Literal(l) => l.clone(),
                Slot::Outcome => outcome_value.unwrap_or_default().to_owned(),
                Slot::Expr(_) => unreachable!("only called without expressions"),
            })
            .collect()
    };
    let prelude_slots = || {
        slots.iter().map(|s| match s {
            Slot::Literal(l) => (None, Some(l.clone()), false),
            Slot::Expr(e) => (Some(e.clone()), None, false),
            Slot::Outcome => (None, None, true),
        })
    };
    let fixed = |name: &str, values: Vec<String>| {
        let name = format_ident!("{name}");
        quote! {
            static #name: #krate::__private::FixedSite =
                #krate::__private::FixedSite::new(&__OBS_DEF, &[#(#values),*]);
        }
    };
    let site = quote!(static __OBS_SITE: #krate::__private::Site = #krate::__private::Site::new(&__OBS_DEF););
    match (has_expr, outcome) {
        (false, None) => {
            let site = fixed("__OBS_SITE", literals(None));
            (quote!(#def #site), quote!(), quote!(__OBS_SITE.series()))
        }
        (false, Some((ok, err))) => {
            let (ok_site, err_site) =
                (fixed("__OBS_SITE_OK", literals(Some(ok))), fixed("__OBS_SITE_ERR", literals(Some(err))));
            (
                quote!(#def #ok_site #err_site),
                quote!(),
                quote!(if __obs_ok { __OBS_SITE_OK.series() } else { __OBS_SITE_ERR.series() }),
            )
        }
        (true, None) if plain_values(slots) => (
            quote!(#def #site),
            raw_key(krate, slots),
            quote! {
                match __obs_found {
                    ::std::option::Option::Some(s) => s,
                    ::std::option::Option::None => __OBS_SITE.series_remembered(__obs_key.as_ref(), __obs_raws),
                }
            },
        ),
        (true, None) => (
            quote!(#def #site),
            gated_key(krate, key_stmts(krate, prelude_slots()), false),
            quote!(__OBS_SITE.series(&__obs_key)),
        ),
        (true, Some((ok, err))) => (
            quote!(#def #site),
            gated_key(krate, key_stmts(krate, prelude_slots()), true),
            quote!({
                __obs_key.insert_value(__obs_pos, if __obs_ok { #ok } else { #err });
                __OBS_SITE.series(&__obs_key)
            }),
        ),
    }
}
