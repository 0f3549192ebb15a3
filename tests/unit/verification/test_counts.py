"""Tests for orchestration.test_counts.parse_test_counts on real-world runner output."""

from __future__ import annotations

from orchestration.verification.counts import TestCounts, parse_test_counts


def test_pytest_summary_with_failures_errors_and_skips() -> None:
    output = """\
============================= test session starts ==============================
platform linux -- Python 3.11.7, pytest-8.3.3, pluggy-1.5.0
rootdir: /work/projects/shop
configfile: pyproject.toml
collected 8 items

tests/test_cart.py ..F.s                                                 [ 62%]
tests/test_checkout.py .Es                                               [100%]

==================================== ERRORS ====================================
_________________________ ERROR at setup of test_pay ___________________________
E       fixture 'gateway' not found
=================================== FAILURES ===================================
_______________________________ test_total ____________________________________

    def test_total():
>       assert total([1, 2]) == 4
E       assert 3 == 4

tests/test_cart.py:12: AssertionError
=========================== short test summary info ============================
FAILED tests/test_cart.py::test_total - assert 3 == 4
ERROR tests/test_checkout.py::test_pay
=========== 1 failed, 4 passed, 2 skipped, 1 warning, 1 error in 0.12s ===========
"""
    assert parse_test_counts(output) == TestCounts(passed=4, failed=2, skipped=2, runner="pytest")


def test_pytest_quiet_summary_and_colour_codes() -> None:
    output = (
        "...................                                                      [100%]\n"
        "\x1b[32m\x1b[1m19 passed\x1b[0m\x1b[32m in 0.41s\x1b[0m\n"
    )
    assert parse_test_counts(output) == TestCounts(passed=19, failed=0, skipped=0, runner="pytest")


def test_pytest_long_run_with_xfail_and_deselected() -> None:
    output = (
        "== 120 passed, 3 skipped, 10 deselected, 2 xfailed, 1 xpassed in 61.02s (0:01:01) ==\n"
    )
    assert parse_test_counts(output) == TestCounts(passed=121, failed=0, skipped=5, runner="pytest")


def test_pytest_no_tests_ran() -> None:
    output = (
        "collected 0 items\n\n"
        "============================ no tests ran in 0.01s =============================\n"
    )
    assert parse_test_counts(output) == TestCounts(passed=0, failed=0, skipped=0, runner="pytest")


def test_unittest_ok() -> None:
    output = """\
.....
----------------------------------------------------------------------
Ran 5 tests in 0.001s

OK
"""
    assert parse_test_counts(output) == TestCounts(passed=5, failed=0, skipped=0, runner="unittest")


def test_unittest_ok_with_skips() -> None:
    output = """\
..s..
----------------------------------------------------------------------
Ran 5 tests in 0.002s

OK (skipped=1)
"""
    assert parse_test_counts(output) == TestCounts(passed=4, failed=0, skipped=1, runner="unittest")


def test_unittest_failed() -> None:
    output = """\
.FEss.
======================================================================
ERROR: test_load (test_store.StoreTest.test_load)
----------------------------------------------------------------------
Traceback (most recent call last):
  File "/work/projects/store/test_store.py", line 14, in test_load
    self.store.load("missing")
KeyError: 'missing'

======================================================================
FAIL: test_save (test_store.StoreTest.test_save)
----------------------------------------------------------------------
Traceback (most recent call last):
  File "/work/projects/store/test_store.py", line 9, in test_save
    self.assertEqual(self.store.save(1), 2)
AssertionError: 1 != 2

----------------------------------------------------------------------
Ran 6 tests in 0.004s

FAILED (failures=1, errors=1, skipped=2)
"""
    assert parse_test_counts(output) == TestCounts(passed=2, failed=2, skipped=2, runner="unittest")


def test_node_test_runner_tap_reporter() -> None:
    output = """\
TAP version 13
# Subtest: adds numbers
ok 1 - adds numbers
  ---
  duration_ms: 0.5521
  ...
# Subtest: rejects strings
not ok 2 - rejects strings
  ---
  duration_ms: 0.8174
  failureType: 'testCodeFailure'
  error: 'Expected values to be strictly equal'
  ...
1..4
# tests 4
# suites 0
# pass 3
# fail 1
# cancelled 0
# skipped 0
# todo 0
# duration_ms 48.21
"""
    assert parse_test_counts(output) == TestCounts(passed=3, failed=1, skipped=0, runner="node")


def test_node_test_runner_spec_reporter() -> None:
    output = """\
✔ adds numbers (0.5521ms)
✔ formats money (0.2ms)
✔ parses dates (1.1ms)
﹣ talks to the network (0.1ms) # SKIP
ℹ tests 4
ℹ suites 0
ℹ pass 3
ℹ fail 0
ℹ cancelled 0
ℹ skipped 1
ℹ todo 0
ℹ duration_ms 61.42
"""
    assert parse_test_counts(output) == TestCounts(passed=3, failed=0, skipped=1, runner="node")


def test_jest_summary() -> None:
    output = """\
 PASS  src/cart.test.js
 FAIL  src/checkout.test.js
  ● checkout › applies discount

    expect(received).toBe(expected) // Object.is equality

    Expected: 90
    Received: 100

Test Suites: 1 failed, 1 passed, 2 total
Tests:       1 failed, 1 skipped, 3 passed, 5 total
Snapshots:   0 total
Time:        1.234 s
Ran all test suites.
"""
    assert parse_test_counts(output) == TestCounts(passed=3, failed=1, skipped=1, runner="jest")


def test_cargo_sums_every_test_binary() -> None:
    output = """\
   Compiling shop v0.1.0 (/work/projects/shop)
    Finished `test` profile [unoptimized + debuginfo] target(s) in 1.52s
     Running unittests src/lib.rs (target/debug/deps/shop-4f1c1d6a7b0e2f3a)

running 4 tests
test cart::tests::adds ... ok
test cart::tests::removes ... ok
test cart::tests::slow ... ignored
test cart::tests::totals ... ok

test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s

     Running tests/checkout.rs (target/debug/deps/checkout-9a8b7c6d5e4f3a2b)

running 2 tests
test pays ... ok
test refunds ... FAILED

failures:

---- refunds stdout ----
thread 'refunds' panicked at tests/checkout.rs:10:5:
assertion `left == right` failed

failures:
    refunds

test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

   Doc-tests shop

running 1 test
test src/lib.rs - cart::Cart (line 5) ... ok

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.20s
"""
    assert parse_test_counts(output) == TestCounts(passed=5, failed=1, skipped=1, runner="cargo")


def test_go_test_verbose_counts_result_lines() -> None:
    output = """\
=== RUN   TestAdd
--- PASS: TestAdd (0.00s)
=== RUN   TestParse
=== RUN   TestParse/empty
=== RUN   TestParse/unicode
    parse_test.go:31: got "", want "é"
--- FAIL: TestParse (0.00s)
    --- PASS: TestParse/empty (0.00s)
    --- FAIL: TestParse/unicode (0.00s)
=== RUN   TestNetwork
    net_test.go:12: needs network
--- SKIP: TestNetwork (0.00s)
FAIL
exit status 1
FAIL	example.com/shop	0.012s
"""
    assert parse_test_counts(output) == TestCounts(passed=2, failed=2, skipped=1, runner="go")


def test_plain_passed_failed_line() -> None:
    assert parse_test_counts("running checks...\n12 passed, 1 failed\n") == TestCounts(
        passed=12, failed=1, skipped=0, runner="plain"
    )
    assert parse_test_counts("7 passed, 0 failed, 2 skipped\n") == TestCounts(
        passed=7, failed=0, skipped=2, runner="plain"
    )


def test_last_summary_wins_within_a_runner() -> None:
    output = """\
tests/test_plugin.py::test_inner_session
----------------------------- Captured stdout call -----------------------------
============================== 2 failed in 0.03s ===============================
============================== 9 passed in 0.50s ===============================
"""
    assert parse_test_counts(output) == TestCounts(passed=9, failed=0, skipped=0, runner="pytest")


def test_most_specific_runner_wins_over_plain_and_go_lines() -> None:
    output = """\
--- PASS: captured from a subprocess (0.00s)
1 passed, 5 failed
============================== 4 passed, 1 skipped in 0.20s ===============================
"""
    assert parse_test_counts(output) == TestCounts(passed=4, failed=0, skipped=1, runner="pytest")


def test_windows_line_endings() -> None:
    output = "Ran 3 tests in 0.010s\r\n\r\nFAILED (failures=1)\r\n"
    assert parse_test_counts(output) == TestCounts(passed=2, failed=1, skipped=0, runner="unittest")


def test_unrecognised_output_returns_none() -> None:
    output = """\
Building project...
Compiled 42 files in 3.1s
Lint: 0 problems
Done in 4.20s.
"""
    assert parse_test_counts(output) is None
    assert parse_test_counts("") is None
