"""Fixtures for every test in the repository (real Postgres and NATS, isolated per test)."""

pytest_plugins = ["tailor_core.testing.fixtures"]
