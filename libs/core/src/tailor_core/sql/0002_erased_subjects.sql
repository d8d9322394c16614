-- Subjects erased lately, by token (a digest, never the id). Messages about a subject that
-- were in flight while its erasure ran (fetched, not yet applied) are dropped on arrival
-- instead of writing the person back; a day is far longer than any redelivery.
CREATE TABLE erased_subjects (
    token     text        PRIMARY KEY,
    erased_at timestamptz NOT NULL DEFAULT now()
);
