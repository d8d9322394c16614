"""Test support shared by every package: real Postgres and NATS, isolated per test.

Load the fixtures with ``pytest_plugins = ["tailor_core.testing.fixtures"]``.
"""
