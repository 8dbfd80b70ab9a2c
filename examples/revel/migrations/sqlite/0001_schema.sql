-- Revel's domain. The constraints are the ones the flows rely on: a tier never sells more seats
-- than it has, a Stripe session names one payment, statuses are the flows' own.
CREATE TABLE organizations (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL
);

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL,
    is_staff INTEGER NOT NULL DEFAULT 0,
    -- Unix seconds of the user's last action (revel_users_active_weekly).
    last_active_at BIGINT
);

CREATE TABLE memberships (
    org_id BIGINT NOT NULL REFERENCES organizations (id),
    user_id BIGINT NOT NULL REFERENCES users (id),
    PRIMARY KEY (org_id, user_id)
);

CREATE TABLE questionnaires (
    id INTEGER PRIMARY KEY,
    org_id BIGINT NOT NULL REFERENCES organizations (id),
    evaluation_mode TEXT NOT NULL CHECK (evaluation_mode IN ('automatic', 'manual', 'hybrid')),
    -- The questions as JSON: [{"correct": 1, "fatal": false}, ...].
    questions TEXT NOT NULL,
    pass_ratio DOUBLE PRECISION NOT NULL CHECK (pass_ratio >= 0 AND pass_ratio <= 1),
    submissions BIGINT NOT NULL DEFAULT 0,
    passed BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    org_id BIGINT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('draft', 'open', 'cancelled')),
    visibility TEXT NOT NULL CHECK (visibility IN ('public', 'private', 'members_only')),
    questionnaire_id BIGINT REFERENCES questionnaires (id),
    rsvp_open INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE tiers (
    id INTEGER PRIMARY KEY,
    event_id BIGINT NOT NULL REFERENCES events (id),
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    capacity BIGINT NOT NULL CHECK (capacity >= 0),
    sold BIGINT NOT NULL DEFAULT 0,
    payment_method TEXT NOT NULL CHECK (payment_method IN ('online', 'offline', 'free', 'at_door')),
    CHECK (sold >= 0 AND sold <= capacity)
);
CREATE INDEX tiers_by_event ON tiers (event_id);

CREATE TABLE tickets (
    id INTEGER PRIMARY KEY,
    event_id BIGINT NOT NULL REFERENCES events (id),
    tier_id BIGINT NOT NULL REFERENCES tiers (id),
    user_id BIGINT NOT NULL REFERENCES users (id),
    status TEXT NOT NULL CHECK (status IN ('pending', 'active', 'checked_in', 'cancelled'))
);
CREATE INDEX tickets_by_event ON tickets (event_id);

CREATE TABLE payments (
    id INTEGER PRIMARY KEY,
    ticket_id BIGINT NOT NULL REFERENCES tickets (id),
    session_id TEXT NOT NULL UNIQUE,
    amount_cents BIGINT NOT NULL CHECK (amount_cents >= 0),
    status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'refunded', 'expired'))
);
CREATE INDEX payments_by_ticket ON payments (ticket_id);

CREATE TABLE invitations (
    event_id BIGINT NOT NULL REFERENCES events (id),
    user_id BIGINT NOT NULL REFERENCES users (id),
    PRIMARY KEY (event_id, user_id)
);

CREATE TABLE questionnaire_passes (
    questionnaire_id BIGINT NOT NULL REFERENCES questionnaires (id),
    user_id BIGINT NOT NULL REFERENCES users (id),
    PRIMARY KEY (questionnaire_id, user_id)
);

-- Submissions to manual questionnaires waiting for a reviewer.
CREATE TABLE pending_reviews (
    questionnaire_id BIGINT NOT NULL REFERENCES questionnaires (id),
    user_id BIGINT NOT NULL REFERENCES users (id),
    PRIMARY KEY (questionnaire_id, user_id)
);
