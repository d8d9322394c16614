"""SQL migrations of the segment schema, applied in order by tailor_core.migrations."""
