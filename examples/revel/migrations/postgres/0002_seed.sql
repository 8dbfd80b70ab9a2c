-- The demo data: one organization, users 1-50 (user 1 is staff, 2-20 members), an open public
-- event with an online, a free and an offline tier, a members-only event behind a
-- questionnaire, and a draft event. Ids below 1000 (new rows get ids from 1000 on PostgreSQL).
INSERT INTO organizations (id, name) VALUES (1, 'Revel Demo');

WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50)
INSERT INTO users (id, email, is_staff)
SELECT i, 'user' || i || '@example.org', CASE WHEN i = 1 THEN 1 ELSE 0 END FROM n;

WITH RECURSIVE n (i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < 20)
INSERT INTO memberships (org_id, user_id) SELECT 1, i FROM n;

INSERT INTO questionnaires (id, org_id, evaluation_mode, questions, pass_ratio) VALUES
    (1, 1, 'hybrid', '[{"correct":1,"fatal":false},{"correct":0,"fatal":true},{"correct":2,"fatal":false}]', 0.6);

INSERT INTO events (id, org_id, name, status, visibility, questionnaire_id) VALUES
    (1, 1, 'Rust Meetup', 'open', 'public', NULL),
    (2, 1, 'Members Gala', 'open', 'members_only', 1),
    (3, 1, 'Summer Camp', 'draft', 'public', NULL);

-- Tier 2 is the free RSVP tier: as good as unlimited (load tests buy from it for minutes).
INSERT INTO tiers (id, event_id, price_cents, capacity, payment_method) VALUES
    (1, 1, 2500, 10000, 'online'),
    (2, 1, 0, 4611686018427387903, 'free'),
    (3, 1, 1500, 10000, 'offline'),
    (4, 2, 5000, 10000, 'online'),
    (5, 3, 1000, 3, 'at_door');
