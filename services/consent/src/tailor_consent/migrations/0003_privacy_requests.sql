-- Data-subject requests and each registered service's step.
CREATE TABLE privacy_requests (
    request_id      uuid        PRIMARY KEY,
    kind            text        NOT NULL CHECK (kind IN ('export', 'erase')),
    subject_token   text        NOT NULL,
    -- The subject id is needed to dispatch the steps; an erasure forgets it once complete.
    subject_id      text,
    state           text        NOT NULL DEFAULT 'in_progress'
                                CHECK (state IN ('in_progress', 'completed', 'stuck')),
    reference       text        NOT NULL DEFAULT '',
    requested_by    text        NOT NULL,
    idempotency_key text        UNIQUE,
    attempt         integer     NOT NULL DEFAULT 1,
    dispatched_at   timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    document        jsonb
);

CREATE INDEX privacy_requests_open ON privacy_requests (dispatched_at) WHERE state <> 'completed';

CREATE TABLE privacy_steps (
    request_id  uuid        NOT NULL REFERENCES privacy_requests (request_id) ON DELETE CASCADE,
    service     text        NOT NULL,
    state       text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'completed', 'failed')),
    attempts    integer     NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    error       text        NOT NULL DEFAULT '',
    counts      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    export_part jsonb,
    PRIMARY KEY (request_id, service)
);
