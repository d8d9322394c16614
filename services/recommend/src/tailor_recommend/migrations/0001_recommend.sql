-- Interactions: what subjects did with items, one row per (event, item, kind). The batch
-- models train on them, popularity counts them, and every replica's real-time model follows
-- them by position.
CREATE TABLE interactions (
    position   bigserial   PRIMARY KEY,
    event_id   text        NOT NULL,
    subject_id text        NOT NULL,
    item_id    text        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('view', 'add_to_cart', 'purchase', 'refund')),
    at         timestamptz NOT NULL,
    country    text        NOT NULL DEFAULT '',
    device     text        NOT NULL DEFAULT '',
    UNIQUE (event_id, item_id, kind)
);
CREATE INDEX interactions_by_subject ON interactions (subject_id, position);

-- The catalogue as events describe it (product ids, categories, names are not personal).
CREATE TABLE items (
    item_id  text PRIMARY KEY,
    category text NOT NULL DEFAULT '',
    name     text NOT NULL DEFAULT ''
);

-- Current segment members (from SEGMENT), for "popular in your segment".
CREATE TABLE segment_members (
    segment_id text NOT NULL,
    subject_id text NOT NULL,
    PRIMARY KEY (segment_id, subject_id)
);
CREATE INDEX segment_members_by_subject ON segment_members (subject_id);

-- Ids merged away (ProfilesMerged) -> the surviving profile.
CREATE TABLE identities (
    subject_id text PRIMARY KEY,
    profile_id text NOT NULL
);

-- Batch model versions. Artifacts hold item factors only: a subject is scored by folding
-- its history in at request time, so erasing a subject leaves no user factor behind.
CREATE TABLE models (
    version            text        PRIMARY KEY,
    model              text        NOT NULL,
    state              text        NOT NULL CHECK (state IN ('TRAINING', 'SERVING', 'RETIRED', 'FAILED')),
    started_at         timestamptz NOT NULL,
    trained_at         timestamptz,
    artifact           bytea,
    users              bigint      NOT NULL DEFAULT 0,
    items              bigint      NOT NULL DEFAULT 0,
    interactions       bigint      NOT NULL DEFAULT 0,
    training_seconds   double precision NOT NULL DEFAULT 0,
    peak_bytes         bigint      NOT NULL DEFAULT 0,
    metrics            jsonb       NOT NULL DEFAULT '{}',
    error              text        NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX one_training_per_model ON models (model) WHERE state = 'TRAINING';
CREATE UNIQUE INDEX one_serving_per_model ON models (model) WHERE state = 'SERVING';

-- Bumped by an erasure: every replica rebuilds its real-time model from the table.
CREATE TABLE realtime_epoch (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    epoch    bigint  NOT NULL
);
INSERT INTO realtime_epoch VALUES (true, 0);
