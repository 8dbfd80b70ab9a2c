//! Revel's domain: organizations and their members, events (draft, open, cancelled; public,
//! private, members-only), ticket tiers with a capacity and a payment method, invitations,
//! questionnaires, users, payments and tickets. The rows live in the database (`migrations/`);
//! here are the values their text columns hold.

/// A value stored as text: its column's spelling, and back.
pub trait Stored: Sized + Copy + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    /// The value a column holds (`None` for text the schema's CHECK would have refused).
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventStatus {
    Draft,
    Open,
    Cancelled,
}

impl Stored for EventStatus {
    const ALL: &'static [Self] = &[EventStatus::Draft, EventStatus::Open, EventStatus::Cancelled];
    fn as_str(self) -> &'static str {
        match self {
            EventStatus::Draft => "draft",
            EventStatus::Open => "open",
            EventStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, obs_runtime::Scrub, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    Public,
    Private,
    MembersOnly,
}

impl Visibility {
    /// The seed's `event_type` (metric label and `event_published` field).
    pub fn event_type(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
            Visibility::MembersOnly => "members-only",
        }
    }
}

impl Stored for Visibility {
    const ALL: &'static [Self] = &[Visibility::Public, Visibility::Private, Visibility::MembersOnly];
    fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
            Visibility::MembersOnly => "members_only",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, obs_runtime::Scrub, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Online,
    Offline,
    Free,
    AtDoor,
}

impl Stored for PaymentMethod {
    const ALL: &'static [Self] =
        &[PaymentMethod::Online, PaymentMethod::Offline, PaymentMethod::Free, PaymentMethod::AtDoor];
    fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Online => "online",
            PaymentMethod::Offline => "offline",
            PaymentMethod::Free => "free",
            PaymentMethod::AtDoor => "at_door",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, obs_runtime::Scrub, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvaluationMode {
    Automatic,
    Manual,
    Hybrid,
}

impl Stored for EvaluationMode {
    const ALL: &'static [Self] = &[EvaluationMode::Automatic, EvaluationMode::Manual, EvaluationMode::Hybrid];
    fn as_str(self) -> &'static str {
        match self {
            EvaluationMode::Automatic => "automatic",
            EvaluationMode::Manual => "manual",
            EvaluationMode::Hybrid => "hybrid",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentStatus {
    Pending,
    Succeeded,
    Refunded,
    Expired,
}

impl Stored for PaymentStatus {
    const ALL: &'static [Self] =
        &[PaymentStatus::Pending, PaymentStatus::Succeeded, PaymentStatus::Refunded, PaymentStatus::Expired];
    fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::Expired => "expired",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TicketStatus {
    Pending,
    Active,
    CheckedIn,
    Cancelled,
}

impl Stored for TicketStatus {
    const ALL: &'static [Self] =
        &[TicketStatus::Pending, TicketStatus::Active, TicketStatus::CheckedIn, TicketStatus::Cancelled];
    fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Pending => "pending",
            TicketStatus::Active => "active",
            TicketStatus::CheckedIn => "checked_in",
            TicketStatus::Cancelled => "cancelled",
        }
    }
}

/// An event's row.
#[derive(Clone, Debug)]
pub struct Event {
    pub id: u64,
    pub org_id: u64,
    pub name: String,
    pub status: EventStatus,
    pub visibility: Visibility,
    pub questionnaire_id: Option<u64>,
    pub rsvp_open: bool,
}

#[derive(Clone, obs_runtime::Scrub, serde::Deserialize, serde::Serialize)]
pub struct Question {
    pub correct: usize,
    #[serde(default)]
    pub fatal: bool,
}

/// A questionnaire's row.
#[derive(Clone, Debug)]
pub struct Questionnaire {
    pub id: u64,
    pub org_id: u64,
    pub mode: EvaluationMode,
    pub questions: Vec<Question>,
    pub pass_ratio: f64,
}

/// A user who did something within this long is active.
pub const ACTIVE_WINDOW: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_value_reads_back() {
        fn round_trip<T: Stored + PartialEq + std::fmt::Debug>() {
            for v in T::ALL {
                assert_eq!(T::parse(v.as_str()), Some(*v));
            }
            assert_eq!(T::parse("nonsense"), None);
        }
        round_trip::<EventStatus>();
        round_trip::<Visibility>();
        round_trip::<PaymentMethod>();
        round_trip::<EvaluationMode>();
        round_trip::<PaymentStatus>();
        round_trip::<TicketStatus>();
    }
}
