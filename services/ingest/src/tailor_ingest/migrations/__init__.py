"""SQL migrations of the ingest schema, applied in order by tailor_core.migrations."""
