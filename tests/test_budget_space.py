"""Budgets (the search-space tests live in tests/test_space*.py)."""

import pytest

from autopeft.core.errors import UserError
from autopeft.core.units import parse_budget


@pytest.mark.parametrize(("text", "expected"), [
    ("0.5%", 5_000), ("100%", 1_000_000), ("120k", 120_000), ("1.5M", 1_500_000), ("250000", 250_000),
    ("2K", 2_000), (" 3m ", 3_000_000),
])
def test_parse_budget(text, expected):
    assert parse_budget(text, base_params=1_000_000) == expected


@pytest.mark.parametrize("text", ["0.5", "5%%", "-1%", "abc", "", "0%", "0", "101%", "1.5x"])
def test_malformed_budget_is_a_clear_error(text):
    with pytest.raises(UserError, match="budget"):
        parse_budget(text, base_params=1_000_000)
