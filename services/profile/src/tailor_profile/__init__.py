"""Tailor profile service."""
