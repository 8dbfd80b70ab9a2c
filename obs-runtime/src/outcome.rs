//! What counts as a failed call, for the macros' spans. Below `trace` and the macro seam, which
//! both use it (it was defined in the seam, so that `trace` depended on `__private` and back).

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
