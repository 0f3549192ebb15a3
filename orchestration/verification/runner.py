"""Running a project's own test command (`verify`) and recording what it said."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestration.process import ExecutableNotFoundError, run_process
from orchestration.registry.models import ProjectSpec
from orchestration.verification.counts import parse_test_counts


@dataclass(frozen=True)
class VerificationResult:
    """The outcome of one run of a project's verify command."""

    argv: tuple[str, ...]
    passed: bool
    exit_code: int | None
    tests_passed: int
    tests_failed: int
    tests_skipped: int
    runner: str | None
    duration_s: float
    timed_out: bool
    output_tail: str


def run_verification(
    spec: ProjectSpec, workdir: Path, env: Mapping[str, str], *, sandbox: Sequence[str] = ()
) -> VerificationResult:
    """Run `spec.verify` in `workdir` with exactly `env`, under the launcher `sandbox`
    (`Sandbox.prefix`) if given; counts come from the runner's summary.

    When the output has no summary the runner recognises, the command itself counts as one test.
    """
    argv = tuple(spec.verify)
    try:
        result = run_process(
            argv, cwd=workdir, env=env, timeout_s=spec.verify_timeout, wrapper=sandbox
        )
    except ExecutableNotFoundError as exc:
        return VerificationResult(argv, False, None, 0, 1, 0, None, 0.0, False, str(exc))
    counts = parse_test_counts(result.stdout + "\n" + result.stderr)
    passed = result.ok and (counts is None or counts.failed == 0)
    return VerificationResult(
        argv=argv,
        passed=passed,
        exit_code=result.returncode,
        tests_passed=counts.passed if counts else int(result.ok),
        tests_failed=counts.failed if counts else int(not result.ok),
        tests_skipped=counts.skipped if counts else 0,
        runner=counts.runner if counts else None,
        duration_s=result.duration_s,
        timed_out=result.timed_out,
        output_tail=result.tail(),
    )
