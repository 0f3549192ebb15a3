"""Change sets: one change across several projects, a task per member in dependency order
(`sets.py`), verified together against each other's new code (`verify.py`) and delivered all
or none (`deliver.py`)."""
