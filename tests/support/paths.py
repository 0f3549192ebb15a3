"""Where the repository under test and the shared test material are."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The stand-in agent CLIs (argv in, the real CLI's JSON out), to put first on an agent's PATH.
FAKES_DIR = Path(__file__).resolve().parent / "fakes"
#: Real dependency manifests of public monorepos, beside the repository when it is there.
CORPUS_DIR = REPO_ROOT.parent / "shared" / "corpus"
