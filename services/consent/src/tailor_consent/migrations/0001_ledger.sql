-- Consent ledger, purpose registry and audit log.

CREATE TABLE purposes (
    name             text        PRIMARY KEY,
    description      text        NOT NULL,
    built_in         boolean     NOT NULL DEFAULT false,
    always_allowed   boolean     NOT NULL DEFAULT false,
    allowed_services text[]      NOT NULL DEFAULT '{}',
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- The ledger: appended, never updated. Rows leave only through a subject's erasure.
CREATE TABLE decisions (
    position        bigserial   PRIMARY KEY,
    decision_id     uuid        NOT NULL UNIQUE,
    subject_id      text        NOT NULL,
    purpose         text        NOT NULL REFERENCES purposes (name),
    kind            text        NOT NULL CHECK (kind IN ('granted', 'denied', 'withdrawn')),
    source          text        NOT NULL,
    jurisdiction    text        NOT NULL,
    policy_version  text        NOT NULL DEFAULT '',
    proof_reference text        NOT NULL DEFAULT '',
    decided_at      timestamptz NOT NULL,
    expires_at      timestamptz,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    inherited_from  text        NOT NULL DEFAULT ''
);

CREATE INDEX decisions_by_subject ON decisions (subject_id, position);
CREATE INDEX decisions_by_recorded_at ON decisions (recorded_at);

CREATE FUNCTION decisions_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the consent ledger is append-only';
END;
$$;

CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions
    FOR EACH ROW EXECUTE FUNCTION decisions_are_append_only();

-- The jurisdiction last stated for a subject; it sets the default for purposes without a decision.
CREATE TABLE subjects (
    subject_id   text        PRIMARY KEY,
    jurisdiction text        NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Tamper-evident audit log: each row's hash covers the previous row's hash and its own content.
-- Subjects appear only as one-way tokens, so the log outlives an erasure without naming anyone
-- and without breaking the chain.
CREATE TABLE audit_log (
    sequence      bigint      PRIMARY KEY,
    at            timestamptz NOT NULL,
    action        text        NOT NULL,
    actor         text        NOT NULL,
    subject_token text        NOT NULL DEFAULT '',
    purpose    text        NOT NULL DEFAULT '',
    request_id text        NOT NULL DEFAULT '',
    details    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    hash       text        NOT NULL
);

CREATE INDEX audit_by_subject ON audit_log (subject_token, sequence);
CREATE INDEX audit_by_actor ON audit_log (actor, sequence);
CREATE INDEX audit_by_at ON audit_log (at);
