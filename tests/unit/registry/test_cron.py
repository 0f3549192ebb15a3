"""The registry's schedule validator accepts exactly the cron expressions Dagster accepts, without
importing Dagster."""

from __future__ import annotations

import subprocess
import sys

import pytest
from dagster._utils.schedules import is_valid_cron_string
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestration.registry.models import is_dagster_cron

VALID = [
    "0 6 * * 1-5",
    "* * * * *",
    "*/15 * * * *",
    "0,30 * * * *",
    "1-5/2 * * * *",
    "5-1 * * * *",
    "0-59 0-23 1-31 1-12 0-6",
    "59 23 31 12 *",
    "0 0 29 2 *",
    "0 0 30,31 2 *",
    "0 0 30 2,3 *",
    "0 0 31 4 *",
    "0 0 L * *",
    "0 0 l 2 *",
    "0 0 * * 7",
    "0 0 * * 0-7",
    "0 0 * * mon#2",
    "0 0 * * L5",
    "0 0 * jan-mar *",
    "0 0 * JAN MON",
    "0 0 */2 feb *",
    "0 0 ? * *",
    "R * * * *",
    "  0 6 * * 1-5",
    "0\t6 * * *",
    "@daily",
    "@hourly",
    "@weekly",
    "@monthly",
    "@yearly",
    "@annually",
    "@midnight",
]

INVALID = [
    "",
    "   ",
    "never",
    "a b c d e",
    "* * * *",
    "* * * * * *",
    "0 0 * * * 2024",
    "60 * * * *",
    "* 24 * * *",
    "0 0 0 * *",
    "0 0 32 * *",
    "0 0 * 13 *",
    "0 0 * * 8",
    "*/0 * * * *",
    "0 0 30 2 *",
    "0 0 31 2 *",
    "0 0 30 feb *",
    "0 0 31 2 mon",
    "0 0 5L * *",
    "0 0 1W * *",
    "H * * * *",
    "@reboot",
    "@every 5m",
]


@pytest.mark.parametrize("expression", VALID)
def test_accepts_what_dagster_accepts(expression: str) -> None:
    assert is_valid_cron_string(expression)
    assert is_dagster_cron(expression)


@pytest.mark.parametrize("expression", INVALID)
def test_refuses_what_dagster_refuses(expression: str) -> None:
    assert not is_valid_cron_string(expression)
    assert not is_dagster_cron(expression)


# `R` (random) is left out: Dagster's own answer for it can change from call to call
# ("0 0 R 2 *" is refused when the random day is the 30th or 31st).
FIELD = st.one_of(
    st.sampled_from(
        ["*", "?", "L", "l", "H", "mon", "FEB", "sun-sat", "jan-mar", "5#2", "L5", "1W", "*/0"]
    ),
    st.integers(min_value=0, max_value=61).map(str),
    st.tuples(st.integers(0, 35), st.integers(0, 35)).map(lambda ab: f"{ab[0]}-{ab[1]}"),
    st.tuples(st.integers(0, 35), st.integers(1, 35)).map(lambda ab: f"{ab[0]},{ab[1]}"),
    st.integers(0, 20).map(lambda step: f"*/{step}"),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(FIELD, min_size=3, max_size=7))
def test_agrees_with_dagster_on_generated_expressions(fields: list[str]) -> None:
    expression = " ".join(fields)
    assert is_dagster_cron(expression) == is_valid_cron_string(expression)


def test_validating_a_schedule_does_not_import_dagster() -> None:
    code = (
        "import sys\n"
        "from orchestration.registry.models import ProjectSpec\n"
        "ProjectSpec(name='alpha', repo='.', schedule='0 6 * * 1-5')\n"
        "assert not [m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
