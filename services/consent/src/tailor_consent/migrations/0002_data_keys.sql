-- Per-subject data keys, stored only wrapped under a master key. Destroying a subject's key
-- (erasure) sets wrapped to NULL: every copy of its ciphertext becomes unreadable.
CREATE TABLE data_keys (
    subject_id    text        PRIMARY KEY,
    key_id        text        NOT NULL UNIQUE,
    wrapped       bytea,
    master_key_id text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    destroyed_at  timestamptz
);

CREATE INDEX data_keys_by_master ON data_keys (master_key_id) WHERE wrapped IS NOT NULL;
