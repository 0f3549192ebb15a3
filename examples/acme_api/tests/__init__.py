"""Unit tests for acme_api (standard library unittest only)."""
