//! What counts as a failed call, in one place: for `only`/`outcome` of `#[counted]`/`#[timed]`
//! ([`Outcome`]), for a span's `err` ([`TracedResult`]), and for a span's error whatever the
//! output's type (the autoref traits on [`OutArg`] and [`ErrText`], chosen by method resolution).
//! All say the same: an `Err` is a failure, anything else a success. (The task wrapper's
//! `TaskResult` adds `retry`, a third outcome, on the same rule for `Result`.) Below `trace` and
//! the macro seam, which re-exports these for the expansions.

use std::fmt::Display;

/// `Err` values of functions traced with `err` must be `Display`.
#[diagnostic::on_unimplemented(
    message = "`err` records the error's `Display`, and `{Self}` is not a `Result` with a `Display` error",
    label = "this return type"
)]
pub trait TracedResult {
    /// The error, if any.
    fn traced_error(&self) -> Option<&dyn std::fmt::Display>;

    /// The error's type (`exception.type`).
    fn traced_error_type(&self) -> &'static str {
        "error"
    }
}

impl<T, E: std::fmt::Display> TracedResult for Result<T, E> {
    #[inline]
    fn traced_error(&self) -> Option<&dyn std::fmt::Display> {
        self.as_ref().err().map(|e| e as &dyn std::fmt::Display)
    }

    fn traced_error_type(&self) -> &'static str {
        std::any::type_name::<E>()
    }
}

/// Whether a function's return value is a success, for `only = ".."` and outcome labels.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no success or failure: `only` and `outcome` need a function returning `Result`",
    label = "this return type is not a `Result`"
)]
pub trait Outcome {
    /// `true` for success.
    fn is_success(&self) -> bool;
}

impl<T, E> Outcome for Result<T, E> {
    #[inline]
    fn is_success(&self) -> bool {
        self.is_ok()
    }
}

/// `outcome.is_success()`, callable on a reference without naming the trait.
#[inline]
pub fn is_success<T: Outcome + ?Sized>(outcome: &T) -> bool {
    outcome.is_success()
}

/// A traced function's output, for recording its error without the `err` option: a function
/// whose return type is written `…Result<…>` marks its span failed on `Err`, whatever the error
/// type. Chosen by method resolution on `&&OutArg`: [`OutputErr`] (on `&OutArg<Result<T, E>>`)
/// first, else [`OutputOk`] (a type merely named `Result`).
pub struct OutArg<'a, T: ?Sized>(pub &'a T);

/// The error of a `Result` output.
pub trait OutputErr<'a> {
    /// The error type.
    type Err: ?Sized + 'a;
    /// The error, if the output is one.
    fn __obs_err(&self) -> Option<&'a Self::Err>;
}

impl<'a, T, E: 'a> OutputErr<'a> for &OutArg<'a, Result<T, E>> {
    type Err = E;
    #[inline]
    fn __obs_err(&self) -> Option<&'a E> {
        self.0.as_ref().err()
    }
}

/// Any other output: no error.
pub trait OutputOk {
    /// Never an error.
    fn __obs_err(&self) -> Option<&'static NoErr>;
}

impl<T: ?Sized> OutputOk for OutArg<'_, T> {
    #[inline]
    fn __obs_err(&self) -> Option<&'static NoErr> {
        None
    }
}

/// The error of an output that is not a `Result`: there is none.
pub enum NoErr {}

impl Display for NoErr {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

/// An error's text for its span: its `Display` ([`ErrDisplay`], on `&&ErrText`), else its `Debug`
/// ([`ErrDebug`], on `&ErrText`), else its type's name ([`ErrName`]). Scrubbed when recorded.
pub struct ErrText<'a, E: ?Sized>(pub &'a E);

/// `Display` errors.
pub trait ErrDisplay {
    /// The text.
    fn __obs_err_text(&self) -> String;
}

impl<E: Display + ?Sized> ErrDisplay for &&ErrText<'_, E> {
    fn __obs_err_text(&self) -> String {
        self.0.to_string()
    }
}

/// `Debug` errors.
pub trait ErrDebug {
    /// The text.
    fn __obs_err_text(&self) -> String;
}

impl<E: std::fmt::Debug + ?Sized> ErrDebug for &ErrText<'_, E> {
    fn __obs_err_text(&self) -> String {
        format!("{:?}", self.0)
    }
}

/// Any other error: its type's name.
pub trait ErrName {
    /// The text.
    fn __obs_err_text(&self) -> String;
}

impl<E: ?Sized> ErrName for ErrText<'_, E> {
    fn __obs_err_text(&self) -> String {
        std::any::type_name::<E>().to_owned()
    }
}
