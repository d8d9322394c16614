-- Definitions: the current state of each segment, and every version of its definition.
-- A deleted segment keeps its rows (its id is never reused) with state 'DELETED'.
CREATE TABLE segments (
    segment_id       text        PRIMARY KEY,
    version          bigint      NOT NULL,
    state            text        NOT NULL CHECK (state IN ('BACKFILLING', 'ACTIVE', 'DELETED')),
    purpose          text        NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    promoted_run     text,
    promoted_cluster integer,
    -- Where the backfill of the current version has got to (subjects are walked by id).
    backfill_after   text
);

CREATE TABLE segment_versions (
    segment_id   text        NOT NULL REFERENCES segments (segment_id),
    version      bigint      NOT NULL,
    name         text        NOT NULL,
    description  text        NOT NULL,
    rule         bytea       NOT NULL,  -- tailor.segment.v1.Rule, canonical
    rule_text    text        NOT NULL,
    purpose      text        NOT NULL,
    references_  text[]      NOT NULL,
    created_at   timestamptz NOT NULL,
    created_by   text        NOT NULL,
    PRIMARY KEY (segment_id, version)
);

-- Current members. `reason` is a tailor.events.v1.MembershipChangeReason number.
CREATE TABLE memberships (
    segment_id      text        NOT NULL,
    subject_id      text        NOT NULL,
    entered_at      timestamptz NOT NULL,
    reason          smallint    NOT NULL,
    explanation     text        NOT NULL,
    segment_version bigint      NOT NULL,
    PRIMARY KEY (segment_id, subject_id)
);
CREATE INDEX memberships_by_subject ON memberships (subject_id);
CREATE INDEX memberships_by_entry ON memberships (segment_id, entered_at, subject_id);

-- What rules are evaluated on, per subject (a profile id): the non-personal trait values
-- the PROFILE stream announced, and the non-personal facts of the subject's events.
CREATE TABLE subjects (
    subject_id text        PRIMARY KEY,
    traits     jsonb       NOT NULL DEFAULT '{}',
    last_seen  timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subject_events (
    event_id   text        PRIMARY KEY,
    subject_id text        NOT NULL,
    name       text        NOT NULL,
    at         timestamptz NOT NULL,
    fields     jsonb       NOT NULL
);
CREATE INDEX subject_events_by_subject ON subject_events (subject_id, at);
CREATE INDEX subject_events_by_time ON subject_events (at);

-- Ids merged away (ProfilesMerged) -> the surviving profile id.
CREATE TABLE identities (
    subject_id text PRIMARY KEY,
    profile_id text NOT NULL
);

-- The clock: when a subject's verdict for a segment can next change with no new event.
CREATE TABLE evaluations_due (
    segment_id text        NOT NULL,
    subject_id text        NOT NULL,
    due_at     timestamptz NOT NULL,
    PRIMARY KEY (segment_id, subject_id)
);
CREATE INDEX evaluations_due_by_time ON evaluations_due (due_at);

-- Discovery runs (K-Means); `model` is what assigning a new subject to a cluster needs.
CREATE TABLE cluster_runs (
    run_id      text        PRIMARY KEY,
    state       text        NOT NULL CHECK (state IN ('RUNNING', 'COMPLETED', 'FAILED')),
    seed        bigint      NOT NULL,
    k_min       integer     NOT NULL,
    k_max       integer     NOT NULL,
    features    text[]      NOT NULL,
    purpose     text        NOT NULL,
    on_demand   boolean     NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    k           integer,
    silhouette  double precision,
    scores      jsonb,
    clusters    jsonb,
    model       jsonb,
    profiles    bigint      NOT NULL DEFAULT 0,
    error       text        NOT NULL DEFAULT ''
);
CREATE INDEX cluster_runs_by_start ON cluster_runs (started_at DESC, run_id);
-- At most one run at a time, across replicas.
CREATE UNIQUE INDEX one_running_cluster_run ON cluster_runs ((true)) WHERE state = 'RUNNING';
