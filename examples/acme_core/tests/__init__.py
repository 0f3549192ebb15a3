"""Unit tests for acme_core (standard library unittest only)."""
