"""All the orchestrator's state at once: its canonical digest (`digest.py`), one consistent
backup of it, checked and restored (`backup.py`), where the Dagster instance keeps it
(`layout.py`), how each kind of file is copied (`copies.py`), the PostgreSQL tools
(`postgres.py`), and what a restore sets right (`reconcile.py`)."""
