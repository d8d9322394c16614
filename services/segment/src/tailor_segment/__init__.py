"""Tailor segment service."""
