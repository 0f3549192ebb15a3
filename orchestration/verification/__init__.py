"""Running a project's own test command (`verify`) and reading the counts its runner printed."""

from orchestration.verification.counts import TestCounts, parse_test_counts
from orchestration.verification.runner import VerificationResult, run_verification

__all__ = ["TestCounts", "VerificationResult", "parse_test_counts", "run_verification"]
