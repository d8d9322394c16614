"""Tailor consent service."""
