-- Projection tables: everything here is rebuilt by replaying EVENTS. A rebuild creates
-- rebuild_<table> LIKE each of them, fills it, and swaps it in (tailor_profile.rebuild).

-- One row per profile. `state` holds the accumulators (tailor_profile.domain.state);
-- `search` the flat non-personal trait values FindProfiles filters on, as of the last
-- write; `windows_change_at` when a windowed figure next changes without a new event (the
-- clock rewrites `search` then). `rfm` and `imputed` are written by the batch jobs.
CREATE TABLE profiles (
    profile_id        text        PRIMARY KEY,
    version           bigint      NOT NULL,
    state             jsonb       NOT NULL,
    search            jsonb       NOT NULL,
    first_seen        timestamptz,
    last_seen         timestamptz,
    windows_change_at timestamptz,
    rfm               jsonb,
    imputed           jsonb,
    stale_traits      text[]      NOT NULL DEFAULT '{}',
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX profiles_by_window_change ON profiles (windows_change_at)
    WHERE windows_change_at IS NOT NULL;

-- Every id of a person (user ids, anonymous ids, ids merged away) -> its profile.
CREATE TABLE identities (
    subject_id text        PRIMARY KEY,
    profile_id text        NOT NULL,
    linked_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX identities_by_profile ON identities (profile_id);

CREATE TABLE merges (
    merge_id             bigserial   PRIMARY KEY,
    surviving_profile_id text        NOT NULL,
    merged_profile_id    text        NOT NULL,
    reason               text        NOT NULL,
    cause_event_id       text        NOT NULL DEFAULT '',
    merged_at            timestamptz NOT NULL,
    merged_by            text        NOT NULL DEFAULT '',
    note                 text        NOT NULL DEFAULT ''
);
CREATE INDEX merges_by_surviving ON merges (surviving_profile_id);
CREATE INDEX merges_by_merged ON merges (merged_profile_id);

-- Every value an explicit or context trait was offered, including those that lost.
-- Personal values are kept sealed (`sealed`, an EncryptedField, base64) with the id whose
-- key opens them (`key_subject`).
CREATE TABLE trait_history (
    entry_id       bigserial   PRIMARY KEY,
    profile_id     text        NOT NULL,
    trait          text        NOT NULL,
    value          jsonb,
    sealed         text,
    key_subject    text,
    source         smallint    NOT NULL,
    set_at         timestamptz NOT NULL,
    lost           boolean     NOT NULL,
    source_id      text        NOT NULL DEFAULT '',
    cause_event_id text        NOT NULL
);
CREATE INDEX trait_history_by_profile ON trait_history (profile_id, trait, set_at DESC);

-- Customer events already applied (the projection's own inbox, rebuilt with it).
-- `subject_id` lets an erasure remove the ids of the subject's events (they can name it).
CREATE TABLE applied_events (
    event_id   text PRIMARY KEY,
    subject_id text NOT NULL DEFAULT ''
);
CREATE INDEX applied_events_by_subject ON applied_events (subject_id);

-- Operational tables (not rebuilt).

CREATE TABLE rebuilds (
    rebuild_id   text        PRIMARY KEY,
    state        text        NOT NULL,
    replayed     bigint      NOT NULL DEFAULT 0,
    target       bigint      NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    error        text        NOT NULL DEFAULT '',
    requested_by text        NOT NULL DEFAULT '',
    reason       text        NOT NULL DEFAULT ''
);
CREATE INDEX rebuilds_by_start ON rebuilds (started_at DESC);

CREATE TABLE job_runs (
    run_id           text        PRIMARY KEY,
    job              text        NOT NULL,
    state            text        NOT NULL,
    profiles_updated bigint      NOT NULL DEFAULT 0,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    on_demand        boolean     NOT NULL,
    error            text        NOT NULL DEFAULT ''
);
CREATE INDEX job_runs_by_start ON job_runs (started_at DESC, run_id);

-- Medians and modes of demographic traits per cohort (country), for imputation.
CREATE TABLE cohort_stats (
    cohort      text        PRIMARY KEY,
    stats       jsonb       NOT NULL,
    computed_at timestamptz NOT NULL
);

-- Replicas of the service that share the EVENTS partitions (tailor_profile.partitions).
CREATE TABLE projection_members (
    member_id    text        PRIMARY KEY,
    heartbeat_at timestamptz NOT NULL
);
