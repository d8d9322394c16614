"""Tailor recommend service."""
