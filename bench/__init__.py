"""Benchmarks: timing goals measured against a baseline on this machine. Each is a module run
from the repository root, `.venv/bin/python -m bench.<name>`; bench/README.md says what each
measures and how long it takes."""
