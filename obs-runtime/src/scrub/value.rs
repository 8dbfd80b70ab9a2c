//! [`Scrub`]: types that know their safe form, and [`Scrubbed`], that form.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Debug, Display};

use super::keys::{KeyClass, classify};
use super::text::{REDACTED, scrub_text};

/// A type that can be logged, recorded on a span or serialized without leaking what it holds.
///
/// Derive it with [`#[derive(Scrub)]`](crate::Scrub): fields named like sensitive keys are
/// redacted, strings are scrubbed as free text (emails, card numbers, tokens), nested `Scrub`
/// values, `Option`s, `Vec`s and maps are scrubbed through, and the derive also writes a `Debug`
/// that prints the scrubbed form.
///
/// ```
/// use obs_runtime::Scrub;
///
/// #[derive(Scrub)]
/// struct Checkout {
///     user_id: u64,
///     email: String,
///     card_number: String,
///     #[scrub(partial = 4)]
///     iban: String,
///     note: Option<String>,
/// }
///
/// let c = Checkout {
///     user_id: 7,
///     email: "ana@example.org".into(),
///     card_number: "4111 1111 1111 1111".into(),
///     iban: "DE89370400440532013000".into(),
///     note: Some("call me at ana@example.org".into()),
/// };
/// assert_eq!(
///     format!("{c:?}"),
///     r#"Checkout { user_id: 7, email: "[EMAIL]", card_number: [REDACTED], iban: "****3000", note: "call me at [EMAIL]" }"#,
/// );
/// assert_eq!(
///     c.scrub().to_string(),
///     r#"{"user_id":7,"email":"[EMAIL]","card_number":"[REDACTED]","iban":"****3000","note":"call me at [EMAIL]"}"#,
/// );
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not say how to log it safely: it does not implement `Scrub`",
    label = "not `Scrub`",
    note = "derive it with `#[derive(obs_runtime::Scrub)]`, or mark the field `#[scrub(redact)]` (or `#[scrub(text)]` for a `Display` type scrubbed as text)"
)]
pub trait Scrub {
    /// This value with everything sensitive replaced.
    fn scrub(&self) -> Scrubbed;

    /// This value as it is, for fields marked `#[scrub(keep)]` and kept ids: only strings differ
    /// from [`scrub`](Self::scrub) (they are not scrubbed as text); what is nested is still
    /// scrubbed.
    fn scrub_raw(&self) -> Scrubbed {
        self.scrub()
    }
}

/// The safe form of a value: what [`Scrub`] gives. Prints as JSON with `Display` (and serializes
/// with serde the same way), and like Rust's `Debug` with `Debug`.
#[derive(Clone, PartialEq)]
pub enum Scrubbed {
    /// `None`, `()`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    Uint(u64),
    /// A float.
    Float(f64),
    /// Text, already scrubbed.
    Str(String),
    /// A value replaced as a whole.
    Redacted,
    /// A sequence.
    List(Vec<Scrubbed>),
    /// A map with string keys.
    Map(Vec<(String, Scrubbed)>),
    /// A struct (or an enum variant with named fields).
    Struct {
        /// The type or variant name.
        name: &'static str,
        /// Whether this is an enum variant.
        variant: bool,
        /// The fields, skipped ones left out.
        fields: Vec<(&'static str, Scrubbed)>,
    },
    /// A tuple struct (or tuple variant).
    Tuple {
        /// The type or variant name.
        name: &'static str,
        /// Whether this is an enum variant.
        variant: bool,
        /// The fields.
        fields: Vec<Scrubbed>,
    },
    /// A unit struct or unit variant.
    Unit {
        /// The type or variant name.
        name: &'static str,
        /// Whether this is an enum variant.
        variant: bool,
    },
}

impl Scrubbed {
    /// `value` scrubbed as free text.
    pub fn text(value: &str) -> Scrubbed {
        Scrubbed::Str(scrub_text(value).into_owned())
    }

    /// `value` under `key`: redacted if the key is sensitive, kept as it is if it is a kept id,
    /// scrubbed otherwise.
    pub fn field<T: Scrub + ?Sized>(key: &str, value: &T) -> Scrubbed {
        match classify(key) {
            KeyClass::Redact => Scrubbed::Redacted,
            KeyClass::Keep => value.scrub_raw(),
            KeyClass::Text => value.scrub(),
        }
    }

    /// Everything but the last `keep` characters of `value` hidden (`****1111`); all of it when
    /// it is not more than twice as long as what would be kept.
    pub fn partial<T: Display + ?Sized>(value: &T, keep: usize) -> Scrubbed {
        let s = value.to_string();
        let n = s.chars().count();
        if n <= keep * 2 {
            return Scrubbed::Redacted;
        }
        let tail: String = s.chars().skip(n - keep).collect();
        Scrubbed::Str(format!("****{tail}"))
    }
}

impl Debug for Scrubbed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scrubbed::Null => f.write_str("None"),
            Scrubbed::Bool(b) => Debug::fmt(b, f),
            Scrubbed::Int(i) => Debug::fmt(i, f),
            Scrubbed::Uint(u) => Debug::fmt(u, f),
            Scrubbed::Float(x) => Debug::fmt(x, f),
            Scrubbed::Str(s) => Debug::fmt(s, f),
            Scrubbed::Redacted => f.write_str(REDACTED),
            Scrubbed::List(items) => f.debug_list().entries(items).finish(),
            Scrubbed::Map(entries) => f.debug_map().entries(entries.iter().map(|(k, v)| (k, v))).finish(),
            Scrubbed::Struct { name, fields, .. } => {
                let mut s = f.debug_struct(name);
                for (k, v) in fields {
                    s.field(k, v);
                }
                s.finish()
            }
            Scrubbed::Tuple { name, fields, .. } => {
                let mut t = f.debug_tuple(name);
                for v in fields {
                    t.field(v);
                }
                t.finish()
            }
            Scrubbed::Unit { name, .. } => f.write_str(name),
        }
    }
}

/// JSON, as serde would write the original type (enums externally tagged).
impl Display for Scrubbed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&json)
    }
}

impl serde::Serialize for Scrubbed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        fn tagged<S: serde::Serializer, T: serde::Serialize + ?Sized>(
            s: S,
            name: &str,
            inner: &T,
        ) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry(name, inner)?;
            m.end()
        }
        struct Fields<'a>(&'a [(&'static str, Scrubbed)]);
        impl serde::Serialize for Fields<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
        struct Seq<'a>(&'a [Scrubbed]);
        impl serde::Serialize for Seq<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self.0 {
                    [one] => one.serialize(s),
                    many => {
                        let mut q = s.serialize_seq(Some(many.len()))?;
                        for v in many {
                            q.serialize_element(v)?;
                        }
                        q.end()
                    }
                }
            }
        }
        match self {
            Scrubbed::Null => s.serialize_none(),
            Scrubbed::Bool(b) => s.serialize_bool(*b),
            Scrubbed::Int(i) => s.serialize_i64(*i),
            Scrubbed::Uint(u) => s.serialize_u64(*u),
            Scrubbed::Float(x) => s.serialize_f64(*x),
            Scrubbed::Str(v) => s.serialize_str(v),
            Scrubbed::Redacted => s.serialize_str(REDACTED),
            Scrubbed::List(items) => {
                let mut q = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    q.serialize_element(v)?;
                }
                q.end()
            }
            Scrubbed::Map(entries) => {
                let mut m = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
            Scrubbed::Struct { name, variant: true, fields } => tagged(s, name, &Fields(fields)),
            Scrubbed::Struct { fields, .. } => Fields(fields).serialize(s),
            Scrubbed::Tuple { name, variant: true, fields } => tagged(s, name, &Seq(fields)),
            Scrubbed::Tuple { fields, .. } => Seq(fields).serialize(s),
            Scrubbed::Unit { name, variant: true } => s.serialize_str(name),
            Scrubbed::Unit { .. } => s.serialize_unit(),
        }
    }
}

impl Scrub for Scrubbed {
    fn scrub(&self) -> Scrubbed {
        self.clone()
    }
}

impl Scrub for str {
    fn scrub(&self) -> Scrubbed {
        Scrubbed::text(self)
    }
    fn scrub_raw(&self) -> Scrubbed {
        Scrubbed::Str(self.to_owned())
    }
}

impl Scrub for String {
    fn scrub(&self) -> Scrubbed {
        Scrubbed::text(self)
    }
    fn scrub_raw(&self) -> Scrubbed {
        Scrubbed::Str(self.clone())
    }
}

impl Scrub for Cow<'_, str> {
    fn scrub(&self) -> Scrubbed {
        Scrubbed::text(self)
    }
    fn scrub_raw(&self) -> Scrubbed {
        Scrubbed::Str(self.to_string())
    }
}

impl Scrub for char {
    fn scrub(&self) -> Scrubbed {
        Scrubbed::Str(self.to_string())
    }
}

impl Scrub for bool {
    fn scrub(&self) -> Scrubbed {
        Scrubbed::Bool(*self)
    }
}

impl Scrub for () {
    fn scrub(&self) -> Scrubbed {
        Scrubbed::Null
    }
}

macro_rules! numbers {
    ($variant:ident as $as:ty: $($t:ty),*) => {$(
        impl Scrub for $t {
            fn scrub(&self) -> Scrubbed {
                Scrubbed::$variant(*self as $as)
            }
        }
    )*};
}
numbers!(Int as i64: i8, i16, i32);
numbers!(Uint as u64: u8, u16, u32);
numbers!(Float as f64: f32, f64);

// Integers wide enough for a card number are checked as logs and span attributes check them: a
// Luhn-valid one becomes `[CARD]`.
macro_rules! wide_numbers {
    ($variant:ident as $as:ty, |$v:ident| $magnitude:expr; $($t:ty),*) => {$(
        impl Scrub for $t {
            fn scrub(&self) -> Scrubbed {
                let $v = *self;
                if super::text::is_card_number($magnitude) {
                    return Scrubbed::Str(super::text::CARD.to_owned());
                }
                Scrubbed::$variant(*self as $as)
            }
            // A kept id (`user_id`) or `#[scrub(keep)]`: as it is.
            fn scrub_raw(&self) -> Scrubbed {
                Scrubbed::$variant(*self as $as)
            }
        }
    )*};
}
wide_numbers!(Int as i64, |n| (n as i128).unsigned_abs(); i64, isize);
wide_numbers!(Uint as u64, |n| n as u128; u64, usize);

impl Scrub for i128 {
    fn scrub(&self) -> Scrubbed {
        if super::text::is_card_number(self.unsigned_abs()) {
            return Scrubbed::Str(super::text::CARD.to_owned());
        }
        self.scrub_raw()
    }
    fn scrub_raw(&self) -> Scrubbed {
        i64::try_from(*self).map_or_else(|_| Scrubbed::Str(self.to_string()), Scrubbed::Int)
    }
}

impl Scrub for u128 {
    fn scrub(&self) -> Scrubbed {
        if super::text::is_card_number(*self) {
            return Scrubbed::Str(super::text::CARD.to_owned());
        }
        self.scrub_raw()
    }
    fn scrub_raw(&self) -> Scrubbed {
        u64::try_from(*self).map_or_else(|_| Scrubbed::Str(self.to_string()), Scrubbed::Uint)
    }
}

macro_rules! through {
    ($($t:ty),*) => {$(
        impl<T: Scrub + ?Sized> Scrub for $t {
            fn scrub(&self) -> Scrubbed {
                (**self).scrub()
            }
            fn scrub_raw(&self) -> Scrubbed {
                (**self).scrub_raw()
            }
        }
    )*};
}
through!(&T, &mut T, Box<T>, std::rc::Rc<T>, std::sync::Arc<T>);

impl<T: Scrub> Scrub for Option<T> {
    fn scrub(&self) -> Scrubbed {
        self.as_ref().map_or(Scrubbed::Null, Scrub::scrub)
    }
    fn scrub_raw(&self) -> Scrubbed {
        self.as_ref().map_or(Scrubbed::Null, Scrub::scrub_raw)
    }
}

impl<T: Scrub> Scrub for [T] {
    fn scrub(&self) -> Scrubbed {
        Scrubbed::List(self.iter().map(Scrub::scrub).collect())
    }
    fn scrub_raw(&self) -> Scrubbed {
        Scrubbed::List(self.iter().map(Scrub::scrub_raw).collect())
    }
}

impl<T: Scrub, const N: usize> Scrub for [T; N] {
    fn scrub(&self) -> Scrubbed {
        self[..].scrub()
    }
    fn scrub_raw(&self) -> Scrubbed {
        self[..].scrub_raw()
    }
}

impl<T: Scrub> Scrub for Vec<T> {
    fn scrub(&self) -> Scrubbed {
        self[..].scrub()
    }
    fn scrub_raw(&self) -> Scrubbed {
        self[..].scrub_raw()
    }
}

fn map<'a, K: Display + 'a, V: Scrub + 'a>(entries: impl Iterator<Item = (&'a K, &'a V)>) -> Scrubbed {
    Scrubbed::Map(
        entries
            .map(|(k, v)| {
                let k = k.to_string();
                let v = Scrubbed::field(&k, v);
                // A key may itself be personal data (a map keyed by email).
                (scrub_text(&k).into_owned(), v)
            })
            .collect(),
    )
}

impl<K: Display, V: Scrub, H> Scrub for HashMap<K, V, H> {
    fn scrub(&self) -> Scrubbed {
        map(self.iter())
    }
}

impl<K: Display, V: Scrub> Scrub for BTreeMap<K, V> {
    fn scrub(&self) -> Scrubbed {
        map(self.iter())
    }
}

macro_rules! tuples {
    ($(($($n:tt $t:ident),+)),*) => {$(
        impl<$($t: Scrub),+> Scrub for ($($t,)+) {
            fn scrub(&self) -> Scrubbed {
                Scrubbed::List(vec![$(self.$n.scrub()),+])
            }
        }
    )*};
}
tuples!((0 A), (0 A, 1 B), (0 A, 1 B, 2 C), (0 A, 1 B, 2 C, 3 D));

/// `value` recorded safely: its [`Scrub`] form, printed as JSON by `Display` and serialized with
/// serde the same way; `Debug` as Rust would. For logging a value without deriving `Scrub` on its
/// `Serialize` too:
///
/// ```
/// use obs_runtime::scrub::Safe;
/// use std::collections::HashMap;
///
/// let form = HashMap::from([("password", "hunter2")]);
/// assert_eq!(Safe(&form).to_string(), r#"{"password":"[REDACTED]"}"#);
/// ```
pub struct Safe<'a, T: Scrub + ?Sized>(pub &'a T);

impl<T: Scrub + ?Sized> Display for Safe<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Display::fmt(&self.0.scrub(), f)
    }
}

impl<T: Scrub + ?Sized> Debug for Safe<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Debug::fmt(&self.0.scrub(), f)
    }
}

impl<T: Scrub + ?Sized> serde::Serialize for Safe<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.scrub().serialize(s)
    }
}
