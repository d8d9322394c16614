"""SQL migrations of the consent schema, applied in order by tailor_core.migrations."""
