"""The tests, run inside a change set: ORCH_CHANGE_ACME_CORE names a checkout of acme_core's
changed code, whose src/ comes first on the import path, so the API is tested against the
library as the change leaves it. Run from the repository root: `python3 tests/in_change.py`."""

import os
import sys
import unittest
from pathlib import Path

core = os.environ.get("ORCH_CHANGE_ACME_CORE")
if core:
    sys.path.insert(0, str(Path(core) / "src"))
suite = unittest.defaultTestLoader.discover("tests", top_level_dir=".")
sys.exit(0 if unittest.TextTestRunner(verbosity=1).run(suite).wasSuccessful() else 1)
