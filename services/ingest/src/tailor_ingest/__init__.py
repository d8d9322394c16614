"""Tailor ingest service."""
