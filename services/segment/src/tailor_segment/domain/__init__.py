"""Segment domain: rules, clustering and audits as plain Python, with no I/O."""
