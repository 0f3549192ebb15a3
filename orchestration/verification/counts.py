"""Reads passed/failed/skipped counts from the output of a project's verify command.

Recognises the summary lines of pytest, unittest, node's test runner, jest, cargo test and
go test, plus a plain ``N passed, N failed`` line. A pure function over text: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["TestCounts", "parse_test_counts"]

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class TestCounts:
    """How many tests passed, failed (errors included) and were skipped, and by which runner."""

    __test__ = False  # not a pytest test class despite the name

    passed: int
    failed: int
    skipped: int
    runner: str


# --- pytest -----------------------------------------------------------------------------------
# Summaries such as `==== 1 failed, 3 passed, 2 skipped, 1 warning in 0.12s ====`,
# `3 passed in 0.10s` (-q), `=== no tests ran in 0.01s ===`, the older `3 passed in 0.12
# seconds`, and `in 61.00s (0:01:01)`.
_PYTEST_SUMMARY = re.compile(
    r"^=*\s*(?P<items>(?:\d+ [a-z]+(?:, )?)+|no tests ran)"
    r"\s+in [\d.]+\s*(?:s|seconds)(?: \([\d:.]+\))?\s*=*\s*$",
    re.MULTILINE,
)
_PYTEST_ITEM = re.compile(r"(\d+) ([a-z]+)")
_PYTEST_KINDS = {
    "passed": "passed",
    "xpassed": "passed",
    "failed": "failed",
    "error": "failed",
    "errors": "failed",
    "skipped": "skipped",
    "xfailed": "skipped",
}
_PYTEST_KNOWN = {*_PYTEST_KINDS, "deselected", "warning", "warnings", "rerun", "reruns"}


def _pytest(text: str) -> list[TestCounts]:
    found = []
    for match in _PYTEST_SUMMARY.finditer(text):
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        items = _PYTEST_ITEM.findall(match["items"])
        if any(word not in _PYTEST_KNOWN for _, word in items):
            continue  # some other tool's "... in 3s" line
        for number, word in items:
            if word in _PYTEST_KINDS:
                counts[_PYTEST_KINDS[word]] += int(number)
        found.append(TestCounts(**counts, runner="pytest"))
    return found


# --- unittest ---------------------------------------------------------------------------------
# "Ran 5 tests in 0.001s", a blank line, then "OK", "OK (skipped=1)",
# "FAILED (failures=1, errors=1, skipped=2)" or (3.12+) "NO TESTS RAN".
_UNITTEST_SUMMARY = re.compile(
    r"^Ran (?P<ran>\d+) tests? in [\d.]+s\s*\n(?:\s*\n)*"
    r"(?P<verdict>OK|FAILED|NO TESTS RAN)(?: \((?P<details>[^)]*)\))?\s*$",
    re.MULTILINE,
)
_UNITTEST_DETAIL = re.compile(r"([a-z ]+)=(\d+)")


def _unittest(text: str) -> list[TestCounts]:
    found = []
    for match in _UNITTEST_SUMMARY.finditer(text):
        details = {
            key.strip(): int(value)
            for key, value in _UNITTEST_DETAIL.findall(match["details"] or "")
        }
        failed = (
            details.get("failures", 0)
            + details.get("errors", 0)
            + details.get("unexpected successes", 0)
        )
        skipped = details.get("skipped", 0) + details.get("expected failures", 0)
        passed = max(int(match["ran"]) - failed - skipped, 0)
        found.append(TestCounts(passed=passed, failed=failed, skipped=skipped, runner="unittest"))
    return found


# --- node:test --------------------------------------------------------------------------------
# TAP reporter "# pass 3" / spec reporter "ℹ pass 3", in a block with tests, suites, fail,
# cancelled, skipped, todo and duration_ms lines.
_NODE_LINE = re.compile(
    r"^\s*(?:#|ℹ)\s+(tests|suites|pass|fail|cancelled|skipped|todo|duration_ms)\s+([\d.]+)\s*$"
)


def _node(text: str) -> list[TestCounts]:
    found = []
    block: dict[str, float] = {}
    for line in [*text.splitlines(), ""]:
        match = _NODE_LINE.match(line)
        if match:
            block[match[1]] = float(match[2])
            continue
        if "pass" in block and "fail" in block:
            found.append(
                TestCounts(
                    passed=int(block["pass"]),
                    failed=int(block["fail"] + block.get("cancelled", 0)),
                    skipped=int(block.get("skipped", 0)),
                    runner="node",
                )
            )
        block = {}
    return found


# --- jest -------------------------------------------------------------------------------------
# "Tests:       1 failed, 2 skipped, 3 passed, 6 total" (not the "Test Suites:" line).
_JEST_SUMMARY = re.compile(
    r"^\s*Tests:\s+(?P<items>(?:\d+ [a-z]+,\s*)*\d+ total)\s*$", re.MULTILINE
)
_JEST_ITEM = re.compile(r"(\d+) ([a-z]+)")


def _jest(text: str) -> list[TestCounts]:
    found = []
    for match in _JEST_SUMMARY.finditer(text):
        items = {word: int(number) for number, word in _JEST_ITEM.findall(match["items"])}
        found.append(
            TestCounts(
                passed=items.get("passed", 0),
                failed=items.get("failed", 0),
                skipped=items.get("skipped", 0) + items.get("todo", 0),
                runner="jest",
            )
        )
    return found


# --- cargo test -------------------------------------------------------------------------------
# One "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ..." line per
# test binary (unit, integration, doc tests): the run's counts are their sum.
_CARGO_SUMMARY = re.compile(
    r"^test result: (?:ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored;", re.MULTILINE
)


def _cargo(text: str) -> list[TestCounts]:
    lines = _CARGO_SUMMARY.findall(text)
    if not lines:
        return []
    return [
        TestCounts(
            passed=sum(int(passed) for passed, _, _ in lines),
            failed=sum(int(failed) for _, failed, _ in lines),
            skipped=sum(int(ignored) for _, _, ignored in lines),
            runner="cargo",
        )
    ]


# --- go test ----------------------------------------------------------------------------------
# "--- PASS: TestName (0.00s)", indented for subtests; go test -v prints one per test.
_GO_RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): ", re.MULTILINE)


def _go(text: str) -> list[TestCounts]:
    results = _GO_RESULT.findall(text)
    if not results:
        return []
    return [
        TestCounts(
            passed=results.count("PASS"),
            failed=results.count("FAIL"),
            skipped=results.count("SKIP"),
            runner="go",
        )
    ]


# --- plain ------------------------------------------------------------------------------------
# A bare "12 passed, 1 failed" or "12 passed, 1 failed, 2 skipped" line, as custom scripts print.
_PLAIN_SUMMARY = re.compile(r"^\s*(\d+) passed, (\d+) failed(?:, (\d+) skipped)?\s*$", re.MULTILINE)


def _plain(text: str) -> list[TestCounts]:
    return [
        TestCounts(
            passed=int(passed), failed=int(failed), skipped=int(skipped or 0), runner="plain"
        )
        for passed, failed, skipped in _PLAIN_SUMMARY.findall(text)
    ]


# Most specific first: a runner whose summary is distinctive wins over one whose lines could
# appear incidentally (go's per-test lines, the bare plain line).
_PARSERS: tuple[Callable[[str], list[TestCounts]], ...] = (
    _pytest,
    _unittest,
    _jest,
    _cargo,
    _node,
    _go,
    _plain,
)


def parse_test_counts(output: str) -> TestCounts | None:
    """The test counts reported in ``output``, or None if no known summary is in it.

    When summaries of several runners appear, the most specific runner's last summary wins.
    """
    text = _ANSI_ESCAPE.sub("", output).replace("\r\n", "\n").replace("\r", "\n")
    for parser in _PARSERS:
        found = parser(text)
        if found:
            return found[-1]
    return None
