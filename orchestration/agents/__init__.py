"""Coding-agent CLIs behind one interface: build an argv from a profile, parse what it printed."""
