"""Shared fixtures: throwaway registries and real git repositories in temporary directories.

Tests that need `../shared/corpus` skip with a message when it is not beside the repository,
unless ORCH_REQUIRE_CORPUS=1 (set by `.ci/run`), which makes them fail instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.paths import CORPUS_DIR
from tests.support.registry import RegistryDir

REQUIRE_CORPUS_VAR = "ORCH_REQUIRE_CORPUS"


@pytest.fixture
def registry_dir(tmp_path: Path) -> RegistryDir:
    """An empty project registry with the shipped agent profiles and pools."""
    return RegistryDir.create(tmp_path)


@pytest.fixture
def corpus() -> Path:
    """The shared corpus of real manifests; the test skips without it (fails when required)."""
    if not CORPUS_DIR.is_dir():
        message = f"the shared corpus is not on this machine ({CORPUS_DIR})"
        if os.environ.get(REQUIRE_CORPUS_VAR) == "1":
            pytest.fail(f"{message}, and {REQUIRE_CORPUS_VAR}=1 requires it")
        pytest.skip(message)
    return CORPUS_DIR
