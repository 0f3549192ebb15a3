"""Where the repository under test and the shared test material are."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The stand-in agent CLIs (argv in, the real CLI's JSON out), to put first on an agent's PATH.
FAKES_DIR = Path(__file__).resolve().parent / "fakes"
#: The stand-in `claude` CLI (its docstring gives the protocol and the prompt's keywords).
FAKE_CLAUDE = FAKES_DIR / "claude"
#: Real dependency manifests of public monorepos, beside the repository when it is there.
CORPUS_DIR = REPO_ROOT.parent / "shared" / "corpus"


def path_with_fakes(path: str) -> str:
    """`path` (a PATH value) with the stand-in CLIs first, then this interpreter's directory:
    their `#!/usr/bin/env python3` finds this Python, not a version manager's shim (which
    would add variables of its own to what the stand-in reports)."""
    return os.pathsep.join([str(FAKES_DIR), str(Path(sys.executable).parent), path])
