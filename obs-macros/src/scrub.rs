//! `#[derive(Scrub)]`: the scrubbed form of a type, and a `Debug` that prints it.

use darling::ast::{Data, Fields, Style};
use darling::util::{Flag, SpannedValue};
use darling::{FromDeriveInput, FromField, FromVariant};
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, Ident};

#[derive(FromDeriveInput)]
#[darling(attributes(scrub), supports(struct_any, enum_any))]
struct Input {
    ident: Ident,
    generics: syn::Generics,
    data: Data<Variant, Field>,
    /// Path to `obs_runtime`, for crates that re-export it.
    #[darling(rename = "crate")]
    krate: Option<syn::Path>,
    /// Do not write `Debug` (the type has its own, which must then be safe).
    no_debug: Flag,
}

#[derive(FromVariant)]
#[darling(attributes(scrub))]
struct Variant {
    ident: Ident,
    fields: Fields<Field>,
}

#[derive(FromField)]
#[darling(attributes(scrub))]
struct Field {
    ident: Option<Ident>,
    ty: syn::Type,
    /// Always `[REDACTED]`, whatever the name.
    redact: Flag,
    /// As it is, even under a sensitive name (nested values are still scrubbed).
    keep: Flag,
    /// Formatted with `Display` and scrubbed as free text (for types without `Scrub`).
    text: Flag,
    /// Only the last N characters shown: `partial = 4` → `****1111`.
    partial: Option<SpannedValue<usize>>,
    /// Left out.
    skip: Flag,
}

enum How {
    ByName,
    Redact,
    Keep,
    Text,
    Partial(usize),
    Skip,
}

impl Field {
    fn how(&self) -> darling::Result<How> {
        let mut chosen = Vec::new();
        for (flag, name, how) in [
            (&self.redact, "redact", How::Redact),
            (&self.keep, "keep", How::Keep),
            (&self.text, "text", How::Text),
            (&self.skip, "skip", How::Skip),
        ] {
            if flag.is_present() {
                chosen.push((name, flag.span(), how));
            }
        }
        if let Some(p) = &self.partial {
            if **p == 0 {
                return Err(darling::Error::custom(
                    "`partial = 0` would show nothing: use `redact`, or the number of trailing characters to keep",
                )
                .with_span(&p.span()));
            }
            chosen.push(("partial", p.span(), How::Partial(**p)));
        }
        match chosen.len() {
            0 => Ok(How::ByName),
            1 => Ok(chosen.pop().unwrap().2),
            _ => Err(darling::Error::custom(format!(
                "choose one of `{}` for a field: they say different things about the same value",
                chosen.iter().map(|c| c.0).collect::<Vec<_>>().join("`, `")
            ))
            .with_span(&chosen[1].1)),
        }
    }
}

pub fn expand(input: TokenStream) -> TokenStream {
    let input = match syn::parse2::<DeriveInput>(input) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    match derive(&input) {
        Ok(ts) => ts,
        Err(e) => {
            let mut out = e.write_errors();
            out.extend(fallback(&input));
            out
        }
    }
}

/// What a derive with an error expands to besides the error: `Scrub` (the whole value
/// `[REDACTED]`) and `Debug` all the same, so that the one mistake is not followed by another
/// error at every use of the type's `Debug` or `Scrub`.
fn fallback(input: &DeriveInput) -> TokenStream {
    let (krate, no_debug) = match Input::from_derive_input(input) {
        Ok(i) => (i.krate, i.no_debug.is_present()),
        // The attributes themselves are wrong: the default path, and a `Debug`.
        Err(_) => (None, false),
    };
    impls(input.ident.clone(), input.generics.clone(), krate, no_debug, |scrub| quote!(#scrub::Scrubbed::Redacted))
}

/// `impl Scrub` with `body` as `scrub`'s, and unless `no_debug` an `impl Debug` printing it.
fn impls(
    ident: Ident,
    mut generics: syn::Generics,
    krate: Option<syn::Path>,
    no_debug: bool,
    body: impl FnOnce(&TokenStream) -> TokenStream,
) -> TokenStream {
    let krate = krate.unwrap_or_else(|| syn::parse_quote!(::obs_runtime));
    let scrub = quote!(#krate::scrub);
    for p in generics.type_params_mut() {
        p.bounds.push(syn::parse_quote!(#scrub::Scrub));
    }
    let (impl_g, ty_g, where_g) = generics.split_for_impl();
    let debug = (!no_debug).then(|| {
        quote! {
            /// Prints the scrubbed form (written by `#[derive(Scrub)]`).
            impl #impl_g ::core::fmt::Debug for #ident #ty_g #where_g {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    ::core::fmt::Debug::fmt(&#scrub::Scrub::scrub(self), f)
                }
            }
        }
    });
    let body = body(&scrub);
    quote! {
        impl #impl_g #scrub::Scrub for #ident #ty_g #where_g {
            fn scrub(&self) -> #scrub::Scrubbed {
                #body
            }
        }
        #debug
    }
}

fn derive(input: &DeriveInput) -> darling::Result<TokenStream> {
    let Input { ident, generics, data, krate: krate_path, no_debug } = Input::from_derive_input(input)?;
    let krate = krate_path.clone().unwrap_or_else(|| syn::parse_quote!(::obs_runtime));
    let scrub = quote!(#krate::scrub);
    let mut errors = darling::Error::accumulator();
    let name = ident.to_string();
    let body = match &data {
        Data::Struct(fields) => {
            let (pattern, value) =
                errors.handle(shape(&scrub, quote!(#ident), &name, false, fields)).unwrap_or_default();
            quote!(match self { #pattern => #value })
        }
        Data::Enum(variants) => {
            let arms = variants.iter().filter_map(|v| {
                let vi = &v.ident;
                let (pattern, value) =
                    errors.handle(shape(&scrub, quote!(#ident::#vi), &vi.to_string(), true, &v.fields))?;
                Some(quote!(#pattern => #value,))
            });
            let arms: Vec<_> = arms.collect();
            quote!(match self { #(#arms)* #[allow(unreachable_patterns)] _ => #scrub::Scrubbed::Null })
        }
    };
    errors.finish()?;
    Ok(impls(ident, generics, krate_path, no_debug.is_present(), |_| body))
}

/// The match pattern binding a struct's (or variant's) fields, and its scrubbed value.
fn shape(
    scrub: &TokenStream,
    path: TokenStream,
    name: &str,
    variant: bool,
    fields: &Fields<Field>,
) -> darling::Result<(TokenStream, TokenStream)> {
    let mut errors = darling::Error::accumulator();
    let mut binds = Vec::new();
    let mut values = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        let Some(how) = errors.handle(f.how()) else { continue };
        let var = format_ident!("__obs_f{}", i);
        let member = match &f.ident {
            Some(id) => quote!(#id),
            None => {
                let idx = syn::Index::from(i);
                quote!(#idx)
            }
        };
        binds.push(quote!(#member: #var));
        let key = f.ident.as_ref().map(|id| id.to_string().trim_start_matches("r#").to_owned());
        // The field's type, spanned on the field: a type without `Scrub` (or `Display` for
        // `text`/`partial`) is reported there.
        let ty = &f.ty;
        let span = ty.span();
        let value = match how {
            How::Skip => continue,
            How::Redact => quote!(#scrub::Scrubbed::Redacted),
            How::Keep => quote_spanned!(span=> <#ty as #scrub::Scrub>::scrub_raw(#var)),
            // `Option<T>`: `T`'s text, `None` as null.
            How::Text => match option_inner(ty) {
                Some(inner) => quote_spanned!(span=> match #var {
                    ::core::option::Option::Some(v) => #scrub::Scrubbed::text(&<#inner as ::std::string::ToString>::to_string(v)),
                    ::core::option::Option::None => #scrub::Scrubbed::Null,
                }),
                None => {
                    quote_spanned!(span=> #scrub::Scrubbed::text(&<#ty as ::std::string::ToString>::to_string(#var)))
                }
            },
            How::Partial(n) => match option_inner(ty) {
                Some(inner) => quote_spanned!(span=> match #var {
                    ::core::option::Option::Some(v) => #scrub::Scrubbed::partial::<#inner>(v, #n),
                    ::core::option::Option::None => #scrub::Scrubbed::Null,
                }),
                None => quote_spanned!(span=> #scrub::Scrubbed::partial::<#ty>(#var, #n)),
            },
            // A field without a name goes by its type's or variant's name: `Password(String)`
            // is redacted, `UserId(u64)` kept, `Note(String)` scrubbed as text.
            How::ByName => {
                let k = key.clone().unwrap_or_else(|| name.to_owned());
                quote_spanned!(span=> #scrub::Scrubbed::field::<#ty>(#k, #var))
            }
        };
        values.push(match &key {
            Some(k) => quote!((#k, #value)),
            None => value,
        });
    }
    errors.finish()?;
    let pattern = quote!(#path { #(#binds,)* .. });
    let value = match fields.style {
        Style::Struct => quote!(#scrub::Scrubbed::Struct {
            name: #name, variant: #variant, fields: ::std::vec![#(#values),*],
        }),
        Style::Tuple => quote!(#scrub::Scrubbed::Tuple {
            name: #name, variant: #variant, fields: ::std::vec![#(#values),*],
        }),
        Style::Unit => quote!(#scrub::Scrubbed::Unit { name: #name, variant: #variant }),
    };
    Ok((pattern, value))
}

/// `T` of a field written `Option<T>` (or `std::option::Option<T>`).
fn option_inner(ty: &syn::Type) -> Option<&syn::Type> {
    let syn::Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if p.qself.is_some() || last.ident != "Option" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    match args.args.first() {
        Some(syn::GenericArgument::Type(inner)) if args.args.len() == 1 => Some(inner),
        _ => None,
    }
}
