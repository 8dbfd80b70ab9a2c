-- Every submission to a questionnaire and its outcome: the seed's `submission_id`.
CREATE TABLE submissions (
    id INTEGER PRIMARY KEY,
    questionnaire_id BIGINT NOT NULL REFERENCES questionnaires (id),
    user_id BIGINT NOT NULL REFERENCES users (id),
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected'))
);
CREATE INDEX submissions_by_applicant ON submissions (questionnaire_id, user_id);
