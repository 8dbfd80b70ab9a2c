//! Running a function's block as a value, whatever its signature: `return` and `?` inside it
//! return from the wrapper, not from the function.

use proc_macro2::TokenStream;
use quote::quote;
use syn::visit_mut::VisitMut;
use syn::{Block, ReturnType, Signature, Type};

/// An expression evaluating the user's block: an immediately called closure for a sync function,
/// an awaited `async move` block for an `async fn`. A "fake return edge" at the top ties the
/// wrapper's return type to the declared one, so `?` conversions and `Default`-like inference keep
/// working and type errors stay on the user's code.
pub fn call_block(krate: &syn::Path, sig: &Signature, block: &Block) -> TokenStream {
    let fake = fake_return(sig);
    if sig.asyncness.is_some() {
        quote!(async move { #fake #block }.await)
    } else {
        // Called through an `FnOnce` bound so that the closure owns its captures: a method may
        // return a reborrow of `&mut self`.
        quote!(#krate::__private::call_once(move || { #fake #block }))
    }
}

pub fn fake_return(sig: &Signature) -> TokenStream {
    let ty = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => {
            let mut ty = (**ty).clone();
            EraseImplTrait.visit_type_mut(&mut ty);
            quote!(#ty)
        }
    };
    quote! {
        #[allow(unreachable_code, clippy::diverging_sub_expression, clippy::needless_return)]
        if false {
            let __obs_fake_return: #ty = loop {};
            return __obs_fake_return;
        }
    }
}

/// `impl Trait` cannot be written in a `let`; `_` lets inference fill it in.
struct EraseImplTrait;

impl VisitMut for EraseImplTrait {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::ImplTrait(it) = ty {
            let underscore_token = syn::Token![_](syn::spanned::Spanned::span(it));
            *ty = Type::Infer(syn::TypeInfer { attrs: Vec::new(), underscore_token });
            return;
        }
        syn::visit_mut::visit_type_mut(self, ty);
    }
}

/// The statements before, and the future of, a body that `#[async_trait]` wrote: a function
/// (not `async`) declared to return `Pin<Box<dyn Future<..>>>` (or a `BoxFuture`) whose last
/// expression is `Box::pin(<future>)` (`async move { .. }`, or the same after another obs
/// attribute wrapped it).
pub fn async_trait_body<'a>(sig: &syn::Signature, block: &'a syn::Block) -> Option<(&'a [syn::Stmt], &'a syn::Expr)> {
    if sig.asyncness.is_some() {
        return None;
    }
    let (last, before) = block.stmts.split_last()?;
    let syn::Stmt::Expr(syn::Expr::Call(call), None) = last else { return None };
    let syn::Expr::Path(f) = &*call.func else { return None };
    let segments: Vec<String> = f.path.segments.iter().map(|s| s.ident.to_string()).collect();
    if !segments.ends_with(&["Box".to_owned(), "pin".to_owned()]) || call.args.len() != 1 {
        return None;
    }
    let future = call.args.first()?;
    match &sig.output {
        ReturnType::Type(_, ty) if boxed_dyn_future(ty) => Some((before, future)),
        _ => None,
    }
}

/// Whether `ty` is `Pin<Box<dyn Future<..> + ..>>` (what `#[async_trait]` declares) or a
/// `BoxFuture`/`LocalBoxFuture` alias: a type the wrapped future still coerces to. Read from the
/// type's structure: a `Pin<Box<SomeFuture>>` of a concrete type is left alone.
fn boxed_dyn_future(ty: &Type) -> bool {
    let Type::Path(p) = ty else { return false };
    let Some(last) = p.path.segments.last() else { return false };
    if last.ident == "BoxFuture" || last.ident == "LocalBoxFuture" {
        return true;
    }
    let arg = |seg: &syn::PathSegment| match &seg.arguments {
        syn::PathArguments::AngleBracketed(a) if a.args.len() == 1 => match a.args.first() {
            Some(syn::GenericArgument::Type(t)) => Some(t.clone()),
            _ => None,
        },
        _ => None,
    };
    if last.ident != "Pin" {
        return false;
    }
    let Some(Type::Path(boxed)) = arg(last) else { return false };
    let Some(b) = boxed.path.segments.last().filter(|b| b.ident == "Box") else { return false };
    let Some(Type::TraitObject(obj)) = arg(b) else { return false };
    obj.bounds.iter().any(|bound| {
        matches!(bound, syn::TypeParamBound::Trait(t) if t.path.segments.last().is_some_and(|s| s.ident == "Future"))
    })
}
