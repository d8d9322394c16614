"""SQL migrations of the recommend schema, applied in order by tailor_core.migrations."""
