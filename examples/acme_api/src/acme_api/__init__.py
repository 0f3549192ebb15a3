"""Acme articles service: a tiny standard-library WSGI app."""

__version__ = "0.1.0"
