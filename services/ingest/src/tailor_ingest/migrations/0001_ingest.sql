-- API keys per source. The secret is random (256 bits), so a plain SHA-256 of it is as
-- good as a slow hash and lets every call be checked in microseconds.
CREATE TABLE api_keys (
    key_id                text        PRIMARY KEY,
    source_id             text        NOT NULL,
    secret_sha256         bytea       NOT NULL,
    scopes                text[]      NOT NULL,
    rate_limit_per_second integer     NOT NULL DEFAULT 0,
    burst                 integer     NOT NULL DEFAULT 0,
    label                 text        NOT NULL DEFAULT '',
    created_by            text        NOT NULL DEFAULT '',
    created_at            timestamptz NOT NULL DEFAULT now(),
    expires_at            timestamptz,
    revoked_at            timestamptz,
    last_used_at          timestamptz
);
CREATE INDEX api_keys_by_source ON api_keys (source_id, created_at DESC);

-- Tracking plans: every version is kept; the current one is the highest version of a source
-- that is not deleted.
CREATE TABLE tracking_plans (
    source_id  text        NOT NULL,
    version    bigint      NOT NULL,
    plan       bytea       NOT NULL,  -- tailor.ingest.v1.TrackingPlan, serialized
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text        NOT NULL DEFAULT '',
    deleted_at timestamptz,
    PRIMARY KEY (source_id, version)
);

-- Message ids already accepted, per source: what makes a resend (also after a restart, and
-- long after JetStream's duplicate window) a DUPLICATE. Subjects appear only as one-way
-- tokens; an erasure deletes a subject's rows.
CREATE TABLE received_events (
    source_id     text        NOT NULL,
    message_id    text        NOT NULL,
    subject_token text        NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, message_id)
);
CREATE INDEX received_events_by_subject ON received_events (subject_token);
CREATE INDEX received_events_by_time ON received_events (received_at);

-- Rejected events, queryable by staff; the stored event has its personal fields encrypted
-- (or removed when there was no subject to key them to).
CREATE TABLE rejected_events (
    rejection_id  text        PRIMARY KEY,
    source_id     text        NOT NULL,
    message_id    text        NOT NULL,
    event_name    text        NOT NULL,
    reasons       integer[]   NOT NULL,
    subject_token text        NOT NULL DEFAULT '',
    rejection     bytea       NOT NULL,  -- tailor.events.v1.EventRejected, serialized
    rejected_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_id, message_id)
);
CREATE INDEX rejected_events_newest ON rejected_events (rejected_at DESC, rejection_id DESC);
CREATE INDEX rejected_events_by_subject ON rejected_events (subject_token);
CREATE INDEX rejected_events_by_reason ON rejected_events USING gin (reasons);

-- Quality counts per source and minute: outcomes ('accepted', 'accepted_with_warnings',
-- 'duplicate', 'rejected', 'suppressed') with an empty reason, and per-reason rows
-- ('rejection', 'warning', 'suppression') naming the reason (and, for suppressions, the
-- purpose).
CREATE TABLE quality_counts (
    source_id    text        NOT NULL,
    bucket_start timestamptz NOT NULL,
    metric       text        NOT NULL,
    reason       text        NOT NULL DEFAULT '',
    purpose      text        NOT NULL DEFAULT '',
    count        bigint      NOT NULL,
    PRIMARY KEY (source_id, bucket_start, metric, reason, purpose)
);
