"""Fixtures of the channels' tests: the loopback PostgreSQL database the task store's tests use."""

from __future__ import annotations

from tests.unit.tasks.conftest import postgres_url

__all__ = ["postgres_url"]
