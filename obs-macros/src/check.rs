//! Checks shared by the attributes and `metric!`: the metric against the catalog, labels against
//! the metric, label expressions against the function's arguments.

use obs_catalog::{Catalog, Kind, Metric};
use proc_macro2::{Span, TokenStream};
use syn::visit::Visit;
use syn::{Expr, Ident, LitStr};

/// The catalog entry named by `lit`, or an error at `lit` with the nearest name suggested.
pub fn metric<'c>(catalog: &'c Catalog, lit: &LitStr) -> Result<&'c Metric, syn::Error> {
    let name = lit.value();
    catalog.get(&name).ok_or_else(|| {
        let hint = match catalog.suggest(&name) {
            Some(s) => format!("\nhelp: did you mean `{s}`?"),
            None => String::new(),
        };
        syn::Error::new(
            lit.span(),
            format!("unknown metric `{name}`: `{}` declares no such metric{hint}", catalog_file(catalog)),
        )
    })
}

fn catalog_file(catalog: &Catalog) -> String {
    catalog.path().file_name().map_or_else(|| "metrics.toml".into(), |f| f.to_string_lossy().into_owned())
}

/// An error unless `metric` is of a kind `what` accepts.
pub fn kind(metric: &Metric, lit: &LitStr, what: &str, accepted: Kind, instead: &str) -> Result<(), syn::Error> {
    if metric.kind == accepted {
        return Ok(());
    }
    Err(syn::Error::new(
        lit.span(),
        format!(
            "`{}` is a {} in the catalog, and {what} needs a {accepted}\nhelp: {instead}",
            metric.name, metric.kind
        ),
    ))
}

/// Checks given label names against the metric: unknown, duplicate, missing.
/// `given` is in the user's order; `missing_at` is where a missing label is reported;
/// `outcome_could_supply`: an attribute without `outcome(..)` on a function returning a `Result`,
/// where the message about a missing label says that `outcome(..)` could give it a value.
pub fn labels(
    metric: &Metric,
    given: &[(String, Span)],
    missing_at: Span,
    outcome_could_supply: bool,
    errors: &mut Vec<syn::Error>,
) {
    let declared = || {
        if metric.labels.is_empty() {
            "it declares no labels".to_owned()
        } else {
            format!("declared labels: {}", list(&metric.labels))
        }
    };
    let mut seen: Vec<&str> = Vec::new();
    for (name, span) in given {
        if !metric.labels.contains(name) {
            let hint = obs_catalog::suggest(name, metric.labels.iter().map(String::as_str))
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            errors.push(syn::Error::new(
                *span,
                format!("unknown label `{name}` for `{}`\nhelp: {hint}{}", metric.name, declared()),
            ));
        } else if seen.contains(&name.as_str()) {
            errors.push(syn::Error::new(*span, format!("duplicate label `{name}`")));
        }
        seen.push(name);
    }
    let missing: Vec<String> = metric.labels.iter().filter(|l| !seen.contains(&l.as_str())).cloned().collect();
    if !missing.is_empty() {
        let s = if missing.len() == 1 { "" } else { "s" };
        // Only one label can come from the outcome: with several missing, which one is the user's call.
        let outcome = match missing.as_slice() {
            _ if !outcome_could_supply => String::new(),
            [one] => format!(
                "; `outcome(label = \"{one}\", ok = \"…\", err = \"…\")` would derive it from the function's Result"
            ),
            _ => "; `outcome(label = \"…\", ok = \"…\", err = \"…\")` would derive one of them from the function's \
                  Result"
                .to_owned(),
        };
        errors.push(syn::Error::new(
            missing_at,
            format!(
                "missing label{s} {} for `{}`: every declared label needs a value{outcome}\nhelp: {}",
                list(&missing),
                metric.name,
                declared()
            ),
        ));
    }
}

/// Whether the return type is written `…Result<…>` (`Result`, `io::Result`, `anyhow::Result`, …).
pub fn returns_result(sig: &syn::Signature) -> bool {
    let syn::ReturnType::Type(_, ty) = &sig.output else { return false };
    let mut ty = &**ty;
    while let syn::Type::Paren(syn::TypeParen { elem, .. }) | syn::Type::Group(syn::TypeGroup { elem, .. }) = ty {
        ty = elem;
    }
    matches!(ty, syn::Type::Path(p) if p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == "Result"))
}

fn list(names: &[String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// Names of a function's arguments (`self` included), from their patterns.
pub fn argument_names(sig: &syn::Signature) -> Vec<String> {
    let mut names = Vec::new();
    for input in &sig.inputs {
        match input {
            syn::FnArg::Receiver(_) => names.push("self".to_owned()),
            syn::FnArg::Typed(t) => pattern_names(&t.pat, &mut names),
        }
    }
    names
}

fn pattern_names(pat: &syn::Pat, out: &mut Vec<String>) {
    struct V<'a>(&'a mut Vec<String>);
    impl<'ast> Visit<'ast> for V<'_> {
        fn visit_pat_ident(&mut self, p: &'ast syn::PatIdent) {
            self.0.push(p.ident.to_string());
            syn::visit::visit_pat_ident(self, p);
        }
    }
    V(out).visit_pat(pat);
}

/// Errors for single-segment lower-case paths in `expr` that are not arguments: label values are
/// computed when the function is entered, before any local exists.
pub fn expression_uses_arguments(expr: &Expr, args: &[String], fn_name: &Ident, errors: &mut Vec<syn::Error>) {
    struct V<'a> {
        allowed: Vec<String>,
        args: &'a [String],
        fn_name: &'a Ident,
        errors: &'a mut Vec<syn::Error>,
    }
    impl<'ast> Visit<'ast> for V<'_> {
        fn visit_expr_path(&mut self, p: &'ast syn::ExprPath) {
            if p.qself.is_none() && p.path.leading_colon.is_none() && p.path.segments.len() == 1 {
                let ident = &p.path.segments[0].ident;
                let name = ident.to_string();
                let local_like = name.starts_with(|c: char| c.is_lowercase() || c == '_');
                if local_like && !self.allowed.contains(&name) {
                    let args = if self.args.is_empty() {
                        "it has none".to_owned()
                    } else {
                        self.args.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ")
                    };
                    self.errors.push(syn::Error::new(
                        ident.span(),
                        format!(
                            "`{name}` is not an argument of `{}`: these values are computed when the function \
                             is entered, from its arguments ({args}) or constants",
                            self.fn_name
                        ),
                    ));
                }
            }
            syn::visit::visit_expr_path(self, p);
        }
        fn visit_expr_call(&mut self, c: &'ast syn::ExprCall) {
            // `helper(arg)`: the callee is a function, not a value.
            if !matches!(&*c.func, Expr::Path(_)) {
                self.visit_expr(&c.func);
            }
            for a in &c.args {
                self.visit_expr(a);
            }
        }
        fn visit_expr_closure(&mut self, c: &'ast syn::ExprClosure) {
            let before = self.allowed.len();
            for p in &c.inputs {
                pattern_names(p, &mut self.allowed);
            }
            self.visit_expr(&c.body);
            self.allowed.truncate(before);
        }
    }
    // Names the expression binds itself (`match` arms, `if let`, `let` in a block, closure
    // parameters) are its own, not the function's locals: rustc judges their scopes.
    struct Bound<'a>(&'a mut Vec<String>);
    impl<'ast> Visit<'ast> for Bound<'_> {
        fn visit_pat_ident(&mut self, p: &'ast syn::PatIdent) {
            self.0.push(p.ident.to_string());
            syn::visit::visit_pat_ident(self, p);
        }
    }
    let mut allowed = args.to_vec();
    Bound(&mut allowed).visit_expr(expr);
    V { allowed, args, fn_name, errors }.visit_expr(expr);
}

/// What an attribute that only applies to functions expands to on another item: the item as it
/// is, and one error on its name (on the method's name for a trait method without a body).
pub fn not_a_function(what: &str, item: &TokenStream) -> TokenStream {
    if let Ok(m) = syn::parse2::<syn::TraitItemFn>(item.clone()) {
        let err = syn::Error::new(
            m.sig.ident.span(),
            format!("{what} needs a function body: put it on the implementations of this method"),
        )
        .to_compile_error();
        return quote::quote!(#err #item);
    }
    // Point at the item's name when it has one.
    let span = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Struct(i)) => i.ident.span(),
        Ok(syn::Item::Enum(i)) => i.ident.span(),
        Ok(syn::Item::Const(i)) => i.ident.span(),
        Ok(syn::Item::Static(i)) => i.ident.span(),
        Ok(syn::Item::Mod(i)) => i.ident.span(),
        Ok(syn::Item::Trait(i)) => i.ident.span(),
        Ok(syn::Item::Impl(i)) => i.impl_token.span,
        _ => Span::call_site(),
    };
    let err = syn::Error::new(span, format!("{what} applies to functions and methods")).to_compile_error();
    quote::quote!(#err #item)
}
