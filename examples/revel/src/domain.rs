//! Revel's domain, in memory: organizations and their members, events (draft, open, cancelled;
//! public, private, members-only), ticket tiers with a capacity and a payment method, invitations,
//! questionnaires, users, payments and tickets.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventStatus {
    Draft,
    Open,
    Cancelled,
}

#[derive(Clone, Copy, PartialEq, Eq, obs_runtime::Scrub, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    Public,
    Private,
    MembersOnly,
}

#[derive(Clone, Copy, PartialEq, Eq, obs_runtime::Scrub, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Online,
    Offline,
    Free,
    AtDoor,
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
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

impl EvaluationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EvaluationMode::Automatic => "automatic",
            EvaluationMode::Manual => "manual",
            EvaluationMode::Hybrid => "hybrid",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Tier {
    pub id: u64,
    pub event_id: u64,
    pub price_cents: u64,
    pub capacity: u64,
    pub sold: u64,
    pub payment_method: PaymentMethod,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub id: u64,
    pub org_id: u64,
    pub name: String,
    pub status: EventStatus,
    pub visibility: Visibility,
    pub questionnaire_id: Option<u64>,
    pub rsvp_open: bool,
    /// Its ticket tiers (looked up per eligibility check: no scan of every tier of every event).
    pub tier_ids: Vec<u64>,
}

#[derive(Clone, obs_runtime::Scrub, serde::Deserialize)]
pub struct Question {
    pub correct: usize,
    #[serde(default)]
    pub fatal: bool,
}

#[derive(Clone, Debug)]
pub struct Questionnaire {
    pub id: u64,
    pub org_id: u64,
    pub mode: EvaluationMode,
    pub questions: Vec<Question>,
    pub pass_ratio: f64,
    pub submissions: u64,
    pub passed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentStatus {
    Pending,
    Succeeded,
    Refunded,
    Expired,
}

#[derive(Clone, Debug)]
pub struct Payment {
    pub id: u64,
    pub ticket_id: u64,
    pub session_id: String,
    pub amount_cents: u64,
    pub status: PaymentStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TicketStatus {
    Pending,
    Active,
    CheckedIn,
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct Ticket {
    pub id: u64,
    pub event_id: u64,
    pub tier_id: u64,
    pub user_id: u64,
    pub status: TicketStatus,
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: u64,
    pub email: String,
    pub is_staff: bool,
}

#[derive(Default, Debug)]
pub struct Store {
    next_id: u64,
    pub members: HashMap<u64, HashSet<u64>>,
    pub events: HashMap<u64, Event>,
    pub tiers: HashMap<u64, Tier>,
    pub users: HashMap<u64, User>,
    /// By Stripe checkout session id: webhooks name the session, and a scan under the store's
    /// lock would grow with every payment ever made.
    pub payments: HashMap<String, Payment>,
    pub tickets: HashMap<u64, Ticket>,
    pub questionnaires: HashMap<u64, Questionnaire>,
    pub invitations: HashSet<(u64, u64)>,
    pub passed_questionnaires: HashSet<(u64, u64)>,
    /// Submissions to manual questionnaires waiting for a reviewer, by (questionnaire, user).
    pub pending_reviews: HashSet<(u64, u64)>,
    /// When each user last did something (`revel_users_active_weekly`).
    pub last_active: HashMap<u64, Instant>,
}

/// A user who did something within this long is active.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

impl Store {
    /// Notes that `user` did something at `now` (unknown users are ignored: client-sent ids must
    /// not grow the map); true when they are new to the active set. A user whose week ran out
    /// but who is still in the map until the next [`prune_active`](Self::prune_active) is
    /// counted there already.
    pub fn touch(&mut self, user: u64, now: Instant) -> bool {
        self.users.contains_key(&user) && self.last_active.insert(user, now).is_none()
    }

    /// Forgets the users not active within the window; returns how many are.
    pub fn prune_active(&mut self, now: Instant) -> usize {
        self.last_active.retain(|_, t| now.saturating_duration_since(*t) < ACTIVE_WINDOW);
        self.last_active.len()
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A store with one organization, users 1–50 (user 1 is staff, 2–20 members), an open public
    /// event with an online, a free and an offline tier, a members-only event behind a
    /// questionnaire, and a draft event.
    pub fn seeded() -> Store {
        let mut s = Store { next_id: 1000, ..Store::default() };
        for id in 1..=50 {
            s.users.insert(id, User { id, email: format!("user{id}@example.org"), is_staff: id == 1 });
        }
        s.members.insert(1, (2..=20).collect());
        s.questionnaires.insert(
            1,
            Questionnaire {
                id: 1,
                org_id: 1,
                mode: EvaluationMode::Hybrid,
                questions: vec![
                    Question { correct: 1, fatal: false },
                    Question { correct: 0, fatal: true },
                    Question { correct: 2, fatal: false },
                ],
                pass_ratio: 0.6,
                submissions: 0,
                passed: 0,
            },
        );
        let events = [
            (1, "Rust Meetup", EventStatus::Open, Visibility::Public, None),
            (2, "Members Gala", EventStatus::Open, Visibility::MembersOnly, Some(1)),
            (3, "Summer Camp", EventStatus::Draft, Visibility::Public, None),
        ];
        for (id, name, status, visibility, questionnaire_id) in events {
            s.events.insert(
                id,
                Event {
                    id,
                    org_id: 1,
                    name: name.into(),
                    status,
                    visibility,
                    questionnaire_id,
                    rsvp_open: true,
                    tier_ids: Vec::new(),
                },
            );
        }
        let tiers = [
            (1, 1, 2500, 10_000, PaymentMethod::Online),
            // The free RSVP tier: as good as unlimited (load tests buy from it for minutes).
            (2, 1, 0, u64::MAX / 2, PaymentMethod::Free),
            (3, 1, 1500, 10_000, PaymentMethod::Offline),
            (4, 2, 5000, 10_000, PaymentMethod::Online),
            (5, 3, 1000, 3, PaymentMethod::AtDoor),
        ];
        for (id, event_id, price_cents, capacity, payment_method) in tiers {
            s.tiers.insert(id, Tier { id, event_id, price_cents, capacity, sold: 0, payment_method });
            s.events.get_mut(&event_id).expect("seeded above").tier_ids.push(id);
        }
        s
    }

    /// Whether `user` is staff.
    pub fn is_staff(&self, user: u64) -> bool {
        self.users.get(&user).is_some_and(|u| u.is_staff)
    }

    /// Whether `user` may see `event` as far as invitations go (only private events need one).
    pub fn invited(&self, event: &Event, user: u64) -> bool {
        event.visibility != Visibility::Private || self.invitations.contains(&(event.id, user))
    }

    /// Whether `user` may see `event` as far as membership goes (only members-only events need it).
    pub fn admitted_as_member(&self, event: &Event, user: u64) -> bool {
        event.visibility != Visibility::MembersOnly
            || self.members.get(&event.org_id).is_some_and(|m| m.contains(&user))
    }

    /// Whether `user` passed the event's questionnaire, if it has one.
    pub fn questionnaire_passed(&self, event: &Event, user: u64) -> bool {
        event.questionnaire_id.is_none_or(|q| self.passed_questionnaires.contains(&(q, user)))
    }

    /// Whether any of the event's tiers has a seat left.
    pub fn seats_left(&self, event: &Event) -> bool {
        event.tier_ids.iter().filter_map(|id| self.tiers.get(id)).any(|t| t.sold < t.capacity)
    }

    pub fn active_events(&self) -> usize {
        self.events.values().filter(|e| e.status == EventStatus::Open).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_active_for_a_week_after_their_last_action() {
        let mut store = Store::seeded();
        let t0 = Instant::now();
        assert!(!store.touch(999_999, t0), "unknown users are not tracked");
        assert!(store.touch(5, t0), "newly active");
        assert!(!store.touch(5, t0 + Duration::from_secs(3600)), "still active: counted once");
        assert!(store.touch(6, t0 + Duration::from_secs(3600)));
        assert_eq!(store.prune_active(t0 + ACTIVE_WINDOW), 2, "5 acted an hour after t0");
        assert_eq!(store.prune_active(t0 + ACTIVE_WINDOW + Duration::from_secs(3600)), 0);
        assert!(store.touch(5, t0 + ACTIVE_WINDOW * 2), "back after a quiet week: active again");
    }
}
