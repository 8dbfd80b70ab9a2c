//! `#[traced_span("name", ..)]`: parse → check → expand.

use darling::FromMeta;
use darling::ast::NestedMeta;
use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Ident, ItemFn, Lit, LitStr, Meta, Token};

use crate::{check, wrap};

/// The options after the name: `#[traced_span("name", level = "debug", fields(..), skip(..), err)]`.
#[derive(FromMeta, Default)]
struct TracedArgs {
    /// `level = "trace" | "debug" | "info" | "warn" | "error"` (default `info`): the span is only
    /// recorded when the environment allows it (see `obs_runtime::init`).
    level: Option<darling::util::SpannedValue<String>>,
    /// `kind = "internal" | "server" | "client" | "producer" | "consumer"` (default `internal`):
    /// OpenTelemetry's span kind, which Tempo's service graph pairs client and server spans by.
    kind: Option<darling::util::SpannedValue<String>>,
    /// `fields(arg, key = value, key = ?debug_value, key = %display_value)`: span attributes.
    fields: Option<Fields>,
    /// `skip(arg, ..)`: accepted for `#[tracing::instrument]` compatibility; arguments are never
    /// recorded unless listed in `fields`.
    skip: Option<darling::util::PathList>,
    /// `skip_all`: as `skip`.
    skip_all: darling::util::Flag,
    /// Errors: a function whose return type is written `…Result<…>` marks its span failed on
    /// `Err`, recording the error's `Display` (else its `Debug`, else its type name). `err` asks
    /// for it on any return type (an alias not named `Result`) and requires `Display`; `err =
    /// false` turns it off.
    err: Option<darling::util::Override<bool>>,
    /// Path to `obs_runtime`.
    #[darling(rename = "crate")]
    krate: Option<syn::Path>,
}

/// `fields(..)`, parsed by hand: `?expr` and `%expr` are not Rust expressions.
#[derive(Default)]
struct Fields(Vec<Field>);

struct Field {
    key: String,
    key_span: Span,
    /// `None` for the `arg` shorthand.
    value: Option<(Format, Expr)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Typed,
    Debug,
    Display,
}

impl Parse for Field {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        // key, key.sub.name
        let first: Ident = input.call(syn::ext::IdentExt::parse_any)?;
        let mut key = first.to_string();
        let key_span = first.span();
        while input.peek(Token![.]) {
            input.parse::<Token![.]>()?;
            let part: Ident = input.call(syn::ext::IdentExt::parse_any)?;
            key.push('.');
            key.push_str(&part.to_string());
        }
        if !input.peek(Token![=]) {
            return Ok(Field { key, key_span, value: None });
        }
        input.parse::<Token![=]>()?;
        let format = if input.peek(Token![?]) {
            input.parse::<Token![?]>()?;
            Format::Debug
        } else if input.peek(Token![%]) {
            input.parse::<Token![%]>()?;
            Format::Display
        } else {
            Format::Typed
        };
        Ok(Field { key, key_span, value: Some((format, input.parse()?)) })
    }
}

impl FromMeta for Fields {
    fn from_meta(item: &Meta) -> darling::Result<Self> {
        match item {
            Meta::List(list) => {
                let parsed =
                    syn::parse::Parser::parse2(Punctuated::<Field, Token![,]>::parse_terminated, list.tokens.clone())?;
                Ok(Fields(parsed.into_iter().collect()))
            }
            other => Err(darling::Error::custom("expected `fields(name, key = value, ..)`").with_span(other)),
        }
    }
}

pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    expand_as(crate::ENABLED, args, item)
}

/// `enabled`: whether to instrument; if not, the arguments are checked all the same and the item
/// is left as it is.
pub(crate) fn expand_as(enabled: bool, args: TokenStream, item: TokenStream) -> TokenStream {
    let item_fn: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => match syn::parse2::<syn::ItemImpl>(item.clone()) {
            Ok(block) => return expand_impl(args, block),
            Err(_) => return check::not_a_function("#[traced_span]", &item),
        },
    };
    match plan(args, &item_fn) {
        Ok(plan) if !enabled => {
            let mut item_fn = item_fn;
            item_fn.attrs.extend(traceql_doc(&plan.name));
            item_fn.into_token_stream()
        }
        Ok(plan) => generate(plan, item_fn),
        Err(errors) => {
            let errors = errors.iter().map(syn::Error::to_compile_error);
            quote!(#(#errors)* #item_fn)
        }
    }
}

/// `#[traced_span("prefix", options..)]` on an `impl` block: each method with a body gets
/// `#[traced_span("prefix.<method>", options..)]` (expanded by the compiler as if written there),
/// but a method with a `#[traced_span(..)]` of its own keeps it, `#[traced_span(skip)]` opts a
/// method out, and `const fn`s (which cannot start a span) are left alone. The options are
/// checked once, here; `fields` and `skip(..)` name arguments, which differ between methods, so
/// they are refused.
fn expand_impl(args: TokenStream, mut block: syn::ItemImpl) -> TokenStream {
    let fail = |errors: Vec<syn::Error>, block: &syn::ItemImpl| {
        let errors = errors.iter().map(syn::Error::to_compile_error);
        quote!(#(#errors)* #block)
    };
    let metas = match NestedMeta::parse_meta_list(args.clone()) {
        Ok(m) => m,
        Err(e) => return fail(vec![e], &block),
    };
    let (prefix, rest) = match metas.split_first() {
        Some((NestedMeta::Lit(Lit::Str(s)), rest)) if !s.value().trim().is_empty() => (s.clone(), rest),
        _ => {
            let msg = "#[traced_span] on an `impl` block needs the spans' prefix first, as a string literal: \
                       #[traced_span(\"ticket\")] names the method `checkout`'s span `ticket.checkout`";
            return fail(vec![syn::Error::new(args.span(), msg)], &block);
        }
    };
    let options = match TracedArgs::from_list(rest) {
        Ok(o) => o,
        Err(e) => return fail(vec![e.into()], &block),
    };
    let mut errors = Vec::new();
    level_of(&options.level, &mut errors);
    kind_of(&options.kind, &mut errors);
    let per_method = "on an `impl` block: arguments differ between methods, so put it on the method, \
                      in a #[traced_span(\"name\", ..)] of its own";
    for meta in rest {
        let path = match meta {
            NestedMeta::Meta(m) => m.path(),
            _ => continue,
        };
        if ["fields", "skip", "skip_all"].iter().any(|k| path.is_ident(k)) {
            let name = path.to_token_stream();
            errors.push(syn::Error::new(path.span(), format!("`{name}` cannot be given {per_method}")));
        }
    }
    if !errors.is_empty() {
        return fail(errors, &block);
    }
    let krate = options.krate.unwrap_or_else(|| syn::parse_quote!(::obs_runtime));
    let is_ours = |a: &syn::Attribute| a.path().segments.last().is_some_and(|s| s.ident == "traced_span");
    for item in &mut block.items {
        let syn::ImplItem::Fn(method) = item else { continue };
        if method.sig.constness.is_some() {
            continue;
        }
        if let Some(i) = method.attrs.iter().position(is_ours) {
            let skip = matches!(&method.attrs[i].meta, Meta::List(l) if l.tokens.to_string() == "skip");
            if skip {
                method.attrs.remove(i);
            }
            continue;
        }
        let name = format!("{}.{}", prefix.value(), syn::ext::IdentExt::unraw(&method.sig.ident));
        let name = LitStr::new(&name, prefix.span());
        method.attrs.insert(0, syn::parse_quote!(#[#krate::traced_span(#name #(, #rest)*)]));
    }
    block.into_token_stream()
}

struct Plan {
    krate: syn::Path,
    name: LitStr,
    level: Ident,
    kind: Ident,
    fields: Vec<Field>,
    err: Errors,
}

/// How an `Err` output marks the span.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Errors {
    /// Not at all (`err = false`, or a return type not written `…Result<…>`).
    Off,
    /// `err`: the output must be a `Result` with a `Display` error (checked, with a clear message).
    Strict,
    /// A return type written `…Result<…>`: whatever the error type, by method resolution.
    Auto,
}

/// The span name, first and a string literal, and the options after it.
fn span_name<'m>(metas: &'m [NestedMeta], args: &TokenStream) -> Result<(LitStr, &'m [NestedMeta]), syn::Error> {
    let only = metas.len() == 1;
    match metas.first() {
        Some(NestedMeta::Lit(Lit::Str(s))) => Ok((s.clone(), &metas[1..])),
        Some(NestedMeta::Lit(other)) => {
            Err(syn::Error::new(other.span(), "expected the span name as a string literal, e.g. \"ticket.checkout\""))
        }
        Some(NestedMeta::Meta(Meta::Path(p))) if p.is_ident("skip") && only => Err(syn::Error::new(
            p.span(),
            "`#[traced_span(skip)]` opts a method out of its `impl` block's #[traced_span]: this function is not \
             in one, so remove the attribute",
        )),
        Some(NestedMeta::Meta(Meta::Path(p))) if p.get_ident().is_some() && only => Err(syn::Error::new(
            p.span(),
            "expected the span name as a string literal, e.g. #[traced_span(\"ticket.checkout\")]: span names are \
             part of the dashboards' contract, so they cannot be computed",
        )),
        _ => Err(syn::Error::new(
            args.span(),
            "#[traced_span] needs the span name first, as a string literal: #[traced_span(\"ticket.checkout\")]",
        )),
    }
}

fn plan(args: TokenStream, item: &ItemFn) -> Result<Plan, Vec<syn::Error>> {
    let metas = NestedMeta::parse_meta_list(args.clone()).map_err(|e| vec![e])?;
    let (name, rest) = span_name(&metas, &args).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    if name.value().trim().is_empty() {
        errors.push(syn::Error::new(name.span(), "the span name must not be empty"));
    }
    // Every problem at once: an empty name and a misspelt option are both reported.
    let TracedArgs { level, kind, fields, skip, skip_all, err, krate } = match TracedArgs::from_list(rest) {
        Ok(a) => a,
        Err(e) => {
            errors.push(syn::Error::from(e));
            return Err(errors);
        }
    };
    let level_value = level_of(&level, &mut errors);
    let kind = kind_of(&kind, &mut errors);
    let args_names = check::argument_names(&item.sig);
    let fields = fields.unwrap_or_default().0;
    for f in &fields {
        match &f.value {
            None if !args_names.contains(&f.key) => errors.push(syn::Error::new(
                f.key_span,
                format!(
                    "`{}` is not an argument of `{}`: record it as `{} = <expression over the arguments>`",
                    f.key, item.sig.ident, f.key
                ),
            )),
            None => {}
            Some((_, e)) => check::expression_uses_arguments(e, &args_names, &item.sig.ident, &mut errors),
        }
    }
    for p in skip.iter().flat_map(|s| s.iter()) {
        let name = p.get_ident().map(Ident::to_string).unwrap_or_default();
        if !args_names.contains(&name) {
            errors.push(syn::Error::new(
                p.span(),
                format!("cannot skip `{}`: `{}` has no such argument", p.to_token_stream(), item.sig.ident),
            ));
        }
    }
    let _ = skip_all;
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Plan {
        krate: krate.unwrap_or_else(|| syn::parse_quote!(::obs_runtime)),
        name,
        level: level_value,
        kind,
        fields,
        err: match err {
            Some(darling::util::Override::Inherit | darling::util::Override::Explicit(true)) => Errors::Strict,
            Some(darling::util::Override::Explicit(false)) => Errors::Off,
            // An `#[async_trait]` method's future: its output's type is not written where the
            // macro can read it; the autoref check finds an `Err` whatever it is.
            None if check::returns_result(&item.sig) || wrap::async_trait_body(&item.sig, &item.block).is_some() => {
                Errors::Auto
            }
            None => Errors::Off,
        },
    })
}

type OptionValue = Option<darling::util::SpannedValue<String>>;

/// `level = ".."`: the runtime's `Level` variant, `Info` if absent or unknown (the latter an
/// error).
fn level_of(level: &OptionValue, errors: &mut Vec<syn::Error>) -> Ident {
    let Some(l) = level else { return Ident::new("Info", Span::call_site()) };
    let variant = match l.as_str() {
        "trace" => "Trace",
        "debug" => "Debug",
        "info" => "Info",
        "warn" => "Warn",
        "error" => "Error",
        other => {
            let msg = format!("unknown level `{other}`: expected `trace`, `debug`, `info`, `warn` or `error`");
            errors.push(syn::Error::new(l.span(), msg));
            "Info"
        }
    };
    Ident::new(variant, l.span())
}

/// `kind = ".."`: the runtime's `Kind` variant, `Internal` if absent or unknown (the latter an error).
fn kind_of(kind: &OptionValue, errors: &mut Vec<syn::Error>) -> Ident {
    let Some(k) = kind else { return Ident::new("Internal", Span::call_site()) };
    let variant = match k.as_str() {
        "internal" => "Internal",
        "server" => "Server",
        "client" => "Client",
        "producer" => "Producer",
        "consumer" => "Consumer",
        other => {
            let msg = format!(
                "unknown span kind `{other}`: expected `internal`, `server`, `client`, `producer` or `consumer`"
            );
            errors.push(syn::Error::new(k.span(), msg));
            "Internal"
        }
    };
    Ident::new(variant, k.span())
}

fn generate(plan: Plan, item: ItemFn) -> TokenStream {
    let Plan { krate, name, level, kind, fields, err } = plan;
    let ItemFn { attrs: mut fn_attrs, vis, sig, block, .. } = item;
    fn_attrs.extend(traceql_doc(&name));
    let ret_span = match &sig.output {
        syn::ReturnType::Type(_, t) => t.span(),
        syn::ReturnType::Default => sig.ident.span(),
    };
    let site = quote! {
        static __OBS_SPAN: #krate::__private::SpanSite = #krate::__private::SpanSite {
            name: #name,
            level: #krate::__private::SpanLevel::#level,
            kind: #krate::__private::SpanKind::#kind,
        };
    };
    let attrs = fields.iter().map(|f| field_attr(&krate, f));
    let prelude = quote! {
        #[allow(unused_mut)]
        let mut __obs_state = #krate::__private::SpanState::start(&__OBS_SPAN);
        if __obs_state.is_recording() {
            #[allow(unused_imports)]
            use #krate::__private::{DisplayAttr as _, ScrubAttr as _, TypedAttr as _};
            #(#attrs)*
        }
    };
    // How an instrumented future's output fails its span.
    let future_errors = match err {
        Errors::Off => quote!(),
        Errors::Strict => quote_spanned!(ret_span=> .record_errors()),
        Errors::Auto => {
            let check = error_check(&krate, quote!(__obs_state), quote!(__obs_out));
            quote!(.check_output(|__obs_state, __obs_out| { #check }))
        }
    };
    let body = if let Some((before, future)) = wrap::async_trait_body(&sig, &block) {
        // An `async fn` that `#[async_trait]` (on the impl, so expanded first) turned into a
        // function returning `Box::pin(async move { .. })`: the span covers the future, as for
        // an `async fn`, not the call that makes it.
        quote!({
            #site
            #prelude
            // The future made now, in a scope of its own (another attribute's expansion stays inside).
            ::std::boxed::Box::pin(#krate::__private::Instrumented::new(__obs_state, { #(#before)* #future })#future_errors)
        })
    } else if sig.asyncness.is_some() {
        let fake = wrap::fake_return(&sig);
        quote!({
            #site
            #prelude
            #krate::__private::Instrumented::new(__obs_state, async move { #fake #block })#future_errors.await
        })
    } else {
        sync_body(&krate, err, &sig, &block, site, prelude, ret_span)
    };
    quote!(#(#fn_attrs)* #vis #sig #body)
}

/// The span's name and the TraceQL that finds it, appended to the function's documentation.
fn traceql_doc(name: &LitStr) -> Vec<syn::Attribute> {
    let name = name.value();
    let text = format!("**Traces.** Runs in a span named `{name}`; in Tempo: `{{ name = \"{name}\" }}`.");
    vec![syn::parse_quote!(#[doc = ""]), syn::parse_quote!(#[doc = #text])]
}

/// A synchronous function's body: the span entered around the block (or the call of it, when
/// its output may fail the span).
fn sync_body(
    krate: &syn::Path,
    err: Errors,
    sig: &syn::Signature,
    block: &syn::Block,
    site: TokenStream,
    prelude: TokenStream,
    ret_span: Span,
) -> TokenStream {
    let traced = if err != Errors::Off {
        let call = wrap::call_block(krate, sig, block);
        let record = if err == Errors::Strict {
            quote_spanned!(ret_span=> __obs_entered.record_result(&__obs_out);)
        } else {
            error_check(krate, quote!(__obs_entered), quote!(&__obs_out))
        };
        quote! {
            #prelude
            let mut __obs_entered = __obs_state.enter();
            let __obs_out = #call;
            #record
            ::core::mem::drop(__obs_entered);
            __obs_out
        }
    } else {
        quote! {
            #prelude
            let __obs_entered = __obs_state.enter();
            #block
        }
    };
    // The body is written twice: as it is when the span is off (one load and a branch in front
    // of it, nothing to drop after), and inside the span. Not when the body holds items that
    // must exist once (impls, exported symbols), nor when two copies would return two opaque
    // types (docs/design/expansions.md measures why).
    if !returns_impl_trait(sig) && !has_unique_items(block) {
        quote!({
            #site
            if #krate::__private::span_enabled(&__OBS_SPAN) { #traced } else #block
        })
    } else {
        quote!({ #site #traced })
    }
}

/// One `fields(..)` entry, recorded on a sampled span: typed, `%` Display or `?` Debug.
fn field_attr(krate: &syn::Path, f: &Field) -> TokenStream {
    let key = &f.key;
    match &f.value {
        None => {
            let ident = Ident::new(key, f.key_span);
            quote_spanned!(f.key_span=> __obs_state.set_attribute(#key, (&&#krate::__private::AttrArg(&#ident)).__obs_attr());)
        }
        Some((Format::Typed, e)) => {
            quote_spanned!(e.span()=> __obs_state.set_attribute(#key, (&&#krate::__private::AttrArg(&(#e))).__obs_attr());)
        }
        Some((Format::Display, e)) => quote_spanned!(e.span()=> __obs_state.set_attribute(
            #key,
            #krate::__private::DisplayAttr::__obs_attr(&#krate::__private::AttrArg(&(#e))),
        );),
        Some((Format::Debug, e)) => {
            quote_spanned!(e.span()=> __obs_state.set_attribute(#key, #krate::__private::debug_attr(&(#e)));)
        }
    }
}

/// Fails `state` with the error of a `Result` output `out`, whatever its type (see
/// `__private::OutArg`).
fn error_check(krate: &syn::Path, state: TokenStream, out: TokenStream) -> TokenStream {
    quote! {
        #[allow(unused_imports)]
        use #krate::__private::{ErrDebug as _, ErrDisplay as _, ErrName as _, OutputErr as _, OutputOk as _};
        if let ::core::option::Option::Some(__obs_e) = (&&#krate::__private::OutArg(#out)).__obs_err() {
            #state.fail_typed(::core::any::type_name_of_val(__obs_e), || (&&&#krate::__private::ErrText(__obs_e)).__obs_err_text());
        }
    }
}

/// Whether the return type mentions `impl Trait`: two copies of the body would return two
/// different opaque types (two closures, two `async` blocks).
fn returns_impl_trait(sig: &syn::Signature) -> bool {
    struct Finder(bool);
    impl<'a> syn::visit::Visit<'a> for Finder {
        fn visit_type_impl_trait(&mut self, _: &'a syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut f = Finder(false);
    syn::visit::Visit::visit_return_type(&mut f, &sig.output);
    f.0
}

/// Whether `block` holds something that must not be written twice: an `impl` (a second one would
/// conflict), anything with an exported symbol name, a `static` (two copies would hold two
/// states: two pools, two counters), or a macro that may define one (`thread_local!`,
/// `lazy_static!`, any item-like macro).
fn has_unique_items(block: &syn::Block) -> bool {
    struct Finder(bool);
    impl<'a> syn::visit::Visit<'a> for Finder {
        fn visit_stmt_macro(&mut self, m: &'a syn::StmtMacro) {
            let name = m.mac.path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default();
            if matches!(m.mac.delimiter, syn::MacroDelimiter::Brace(_))
                || matches!(name.as_str(), "thread_local" | "lazy_static")
            {
                self.0 = true;
            }
        }
        fn visit_item(&mut self, item: &'a syn::Item) {
            let exported = |attrs: &[syn::Attribute]| {
                attrs.iter().any(|a| {
                    let p = a.path();
                    p.is_ident("no_mangle")
                        || p.is_ident("export_name")
                        || (p.is_ident("unsafe") && a.meta.to_token_stream().to_string().contains("no_mangle"))
                        || (p.is_ident("unsafe") && a.meta.to_token_stream().to_string().contains("export_name"))
                })
            };
            match item {
                syn::Item::Impl(_) | syn::Item::ForeignMod(_) | syn::Item::Macro(_) | syn::Item::Static(_) => {
                    self.0 = true
                }
                syn::Item::Fn(f) if exported(&f.attrs) => self.0 = true,
                _ => syn::visit::visit_item(self, item),
            }
        }
    }
    let mut f = Finder(false);
    syn::visit::Visit::visit_block(&mut f, block);
    f.0
}
