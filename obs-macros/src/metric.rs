//! `metric!("name", label = value, ..)` and `catalog!()`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{Expr, Ident, Lit, LitStr, Token};

use crate::{catalog, check, record};

/// `crate = path` at the start of a function-like macro's input, and the `,` after it when
/// `more` (more arguments follow): the one parser of the option for `metric!`, `metric_def!` and
/// `catalog!` (the attributes read it with darling).
fn leading_crate(input: ParseStream, more: bool) -> syn::Result<Option<syn::Path>> {
    if !(input.peek(Token![crate]) && input.peek2(Token![=])) {
        return Ok(None);
    }
    input.parse::<Token![crate]>()?;
    input.parse::<Token![=]>()?;
    let path = input.parse::<syn::Path>()?;
    if more {
        input.parse::<Token![,]>()?;
    }
    Ok(Some(path))
}

/// `metric!([crate = path,] "name" [, label = value]*)`
struct MetricInput {
    krate: Option<syn::Path>,
    name: Expr,
    labels: Vec<(Ident, Expr)>,
}

impl Parse for MetricInput {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let krate = leading_crate(input, true)?;
        if input.is_empty() {
            return Err(input.error("expected the name of a catalog metric, e.g. `metric!(\"app_jobs_total\")`"));
        }
        let name: Expr = input.parse()?;
        let mut labels = Vec::new();
        if !input.is_empty() {
            input.parse::<Token![,]>()?;
            let pairs = Punctuated::<LabelPair, Token![,]>::parse_terminated(input)?;
            labels = pairs.into_iter().map(|p| (p.name, p.value)).collect();
        }
        Ok(MetricInput { krate, name, labels })
    }
}

struct LabelPair {
    name: Ident,
    value: Expr,
}

impl Parse for LabelPair {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        // Any identifier: a label may be named `type`, like a keyword (written `type` or `r#type`).
        let name = input.call(syn::ext::IdentExt::parse_any)?;
        input.parse::<Token![=]>()?;
        Ok(LabelPair { name, value: input.parse()? })
    }
}

pub fn expand(input: TokenStream) -> TokenStream {
    match try_expand(crate::ENABLED, input.clone()) {
        Ok(t) => t,
        Err(errors) => {
            let errors = errors.iter().map(syn::Error::to_compile_error);
            // The label expressions stay, borrowed (as the expansion would), so they are still
            // checked and what they use counts as used; read again from the input, since the error
            // may be that it does not parse.
            let (krate, uses) = match syn::parse2::<MetricInput>(input) {
                Ok(MetricInput { krate, labels, .. }) => {
                    (krate, labels.iter().map(|(_, e)| quote_spanned!(e.span()=> let _ = &(#e);)).collect())
                }
                Err(_) => (None, Vec::new()),
            };
            let krate = krate.unwrap_or_else(|| syn::parse_quote!(::obs_runtime));
            // A value accepting every operation, so no second error follows the real one.
            quote!({ #(#errors)* #(#uses)* #krate::__private::Invalid })
        }
    }
}

/// `enabled`: whether to record; if not, the name and labels are checked all the same and the
/// handle holds no series, its label expressions borrowed in a branch never taken.
pub(crate) fn try_expand(enabled: bool, input: TokenStream) -> Result<TokenStream, Vec<syn::Error>> {
    let MetricInput { krate, name, labels } = syn::parse2(input).map_err(|e| vec![e])?;
    let lit: LitStr = match &name {
        Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) => s.clone(),
        other => {
            return Err(vec![syn::Error::new_spanned(
                other,
                "expected a string literal naming a metric of the catalog, e.g. `metric!(\"app_jobs_total\")`: \
                 the name is checked at compile time, so it cannot be computed",
            )]);
        }
    };
    let krate = krate.unwrap_or_else(|| syn::parse_quote!(::obs_runtime));
    let loaded = catalog::load();
    // After the first use, a catalog error leaves no error here: the fallback compiles silently.
    let catalog = loaded.catalog_or_errors(lit.span())?;
    let metric = check::metric(catalog, &lit).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let given: Vec<(String, Span)> =
        labels.iter().map(|(n, _)| (syn::ext::IdentExt::unraw(n).to_string(), n.span())).collect();
    check::labels(metric, &given, lit.span(), false, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let tracking = loaded.tracking();
    let handle = format_ident!("{}", metric.recorded().type_name());
    if !enabled {
        let uses = labels.iter().map(|(_, e)| quote_spanned!(e.span()=> let _ = &(#e);));
        return Ok(quote!({
            #tracking
            if false { #(#uses)* }
            <#krate::__private::#handle as #krate::__private::FromSeries>::from_series(None)
        }));
    }
    let def = record::def_item(&krate, metric);
    let ordered: Vec<&Expr> = metric
        .labels
        .iter()
        .map(|l| &labels.iter().find(|(n, _)| syn::ext::IdentExt::unraw(n) == l).expect("checked: no missing label").1)
        .collect();
    let literal = |e: &Expr| match e {
        Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) => Some(s.value()),
        Expr::Lit(syn::ExprLit { lit: Lit::Int(i), .. }) => Some(i.base10_digits().to_owned()),
        Expr::Lit(syn::ExprLit { lit: Lit::Bool(b), .. }) => Some(b.value.to_string()),
        _ => None,
    };
    if ordered.iter().all(|e| literal(e).is_some()) {
        let values: Vec<String> = ordered.iter().filter_map(|e| literal(e)).collect();
        Ok(quote! {{
            #tracking
            #def
            static __OBS_SITE: #krate::__private::FixedSite =
                #krate::__private::FixedSite::new(&__OBS_DEF, &[#(#values),*]);
            <#krate::__private::#handle as #krate::__private::FromSeries>::from_series(
                if #krate::__private::metrics_on() { Some(__OBS_SITE.series()) } else { None },
            )
        }})
    } else {
        let prelude = record::key_prelude(
            &krate,
            ordered.iter().map(|e| match literal(e) {
                Some(l) => (None, Some(l), false),
                None => (Some((*e).clone()), None, false),
            }),
        );
        Ok(quote! {{
            #tracking
            #def
            static __OBS_SITE: #krate::__private::Site = #krate::__private::Site::new(&__OBS_DEF);
            // Labels are not even formatted while metrics are off.
            <#krate::__private::#handle as #krate::__private::FromSeries>::from_series(if #krate::__private::metrics_on() {
                #prelude
                Some(__OBS_SITE.series(&__obs_key))
            } else {
                None
            })
        }})
    }
}

/// `catalog!()`: every definition of the catalog, as `&'static [MetricDef]`.
pub fn expand_catalog(input: TokenStream) -> TokenStream {
    let krate: syn::Path = if input.is_empty() {
        syn::parse_quote!(::obs_runtime)
    } else {
        // catalog!(crate = path)
        let parsed = |input: ParseStream| {
            leading_crate(input, false)?.ok_or_else(|| input.error("expected `crate = path`, or nothing"))
        };
        match syn::parse::Parser::parse2(parsed, input) {
            Ok(p) => p,
            Err(e) => return e.to_compile_error(),
        }
    };
    let loaded = catalog::load();
    let catalog = match loaded.catalog_or_first_error() {
        Ok(c) => c,
        Err(msg) => {
            let e = msg.map(|msg| syn::Error::new(Span::call_site(), msg).to_compile_error());
            // An empty catalog of the right type: a diverging `loop {}` here made the code after
            // the call "unreachable", a warning on top of the error.
            return quote!({ #e &[] as &'static [#krate::__private::MetricDef] });
        }
    };
    let tracking = loaded.tracking();
    let defs = catalog.metrics().iter().map(|m| record::def_expr(&krate, m));
    let n = catalog.metrics().len();
    quote! {{
        #tracking
        static __OBS_CATALOG: [#krate::__private::MetricDef; #n] = [#(#defs),*];
        &__OBS_CATALOG as &'static [#krate::__private::MetricDef]
    }}
}

/// `metric_def!("name")`: the catalog definition of a metric, checked at compile time and typed
/// by its kind and labels (`Def<kind::Counter, (label::method,)>`), for the integrations that
/// record into metrics the application names: each states what it accepts in its signature.
pub fn expand_def(input: TokenStream) -> TokenStream {
    let parsed = |input: ParseStream| {
        let krate = leading_crate(input, true)?;
        let name: LitStr = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected a string literal naming a metric of the catalog, e.g. `metric_def!(\"app_requests_total\")`",
            )
        })?;
        Ok((krate, name))
    };
    let (krate, lit) = match syn::parse::Parser::parse2(parsed, input) {
        Ok(p) => p,
        Err(e) => return e.to_compile_error(),
    };
    let krate = krate.unwrap_or_else(|| syn::parse_quote!(::obs_runtime));
    let loaded = catalog::load();
    // `Err(None)`: the catalog's error was reported at an earlier use.
    let checked = match loaded.catalog_or_first_error() {
        Ok(catalog) => check::metric(catalog, &lit).map_err(Some),
        Err(msg) => Err(msg.map(|msg| syn::Error::new(lit.span(), msg))),
    };
    let metric = match checked {
        Ok(m) => m,
        Err(e) => {
            // A stand-in of a type every integration accepts (its kind is inferred from the
            // call): one mistake, one error.
            let error = e.map(|e| e.to_compile_error());
            let name = lit.value();
            return quote!({
                #error
                static __OBS_DEF: #krate::__private::MetricDef = #krate::__private::MetricDef {
                    name: #name,
                    help: "",
                    kind: #krate::__private::MetricKind::Counter,
                    labels: &[],
                    buckets: &[],
                    series_cap: 0,
                };
                #krate::__private::checked_def::<_, #krate::__private::Unchecked>(&__OBS_DEF)
            });
        }
    };
    let tracking = loaded.tracking();
    let def = record::def_item(&krate, metric);
    let kind = format_ident!("{}", metric.recorded().type_name());
    let (labels, local): (Vec<TokenStream>, Vec<TokenStream>) = metric
        .labels
        .iter()
        .map(|l| {
            if obs_catalog::INTEGRATION_LABELS.contains(&l.as_str()) {
                let l = format_ident!("{l}");
                (quote!(#krate::metrics::label::#l), quote!())
            } else {
                // A label no integration fills: a type of its own, named as in the catalog so
                // that the integration's error names it.
                let l = syn::parse_str::<Ident>(l).unwrap_or_else(|_| format_ident!("label_{l}"));
                (quote!(#l), quote!(#[allow(non_camel_case_types)] enum #l {}))
            }
        })
        .unzip();
    quote! {{
        #tracking
        #def
        #(#local)*
        #krate::__private::checked_def::<#krate::metrics::kind::#kind, (#(#labels,)*)>(&__OBS_DEF)
    }}
}
