"""The speed studies' shared argument parsing (autopeft/benchmarking.py)."""

import argparse

import pytest

from autopeft.benchmarking import positive_ints


def test_positive_ints_parses_a_comma_separated_list():
    assert positive_ints("32,1") == [32, 1]
    assert positive_ints("8") == [8]


@pytest.mark.parametrize("text", ["", "0", "32,-1", "x", "32,,1"])
def test_positive_ints_rejects_what_is_not_a_list_of_positive_integers(text):
    with pytest.raises(argparse.ArgumentTypeError, match="positive integers"):
        positive_ints(text)
