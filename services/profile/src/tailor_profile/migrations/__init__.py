"""SQL migrations of the profile schema, applied in order by tailor_core.migrations."""
