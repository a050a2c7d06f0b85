"""Integration release tag names: tag_pattern and next_tag_name (queue.landing)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from lockstep import config
from lockstep.queue.landing import next_tag_name, tag_pattern

DEFAULT = config.DEFAULT_TAG_FORMAT
NOV_2026 = datetime(2026, 11, 22, 21, 5, tzinfo=UTC)
MAR_2026 = datetime(2026, 3, 1, tzinfo=UTC)


def test_default_format_is_the_documented_one() -> None:
    assert DEFAULT == "v{year}.{month:02d}.{n}"


# --- the default format ------------------------------------------------------------------------


def test_first_tag_of_the_month_is_1() -> None:
    assert next_tag_name(DEFAULT, set(), NOV_2026) == "v2026.11.1"


def test_month_is_zero_padded() -> None:
    assert next_tag_name(DEFAULT, set(), MAR_2026) == "v2026.03.1"


def test_highest_n_wins_not_the_count_or_the_latest() -> None:
    taken = {"v2026.11.1", "v2026.11.5", "v2026.11.3"}  # gaps are not refilled
    assert next_tag_name(DEFAULT, taken, NOV_2026) == "v2026.11.6"


def test_n_counts_numerically_beyond_9() -> None:
    taken = {"v2026.11.9", "v2026.11.10", "v2026.11.2"}
    assert next_tag_name(DEFAULT, taken, NOV_2026) == "v2026.11.11"
    taken = {f"v2026.11.{n}" for n in range(1, 100)}
    assert next_tag_name(DEFAULT, taken, NOV_2026) == "v2026.11.100"


def test_leading_zeros_in_n_count_by_value() -> None:
    assert next_tag_name(DEFAULT, {"v2026.11.010"}, NOV_2026) == "v2026.11.11"


def test_other_months_years_and_foreign_names_are_ignored() -> None:
    taken = {
        "v2026.10.41",  # last month
        "v2025.11.77",  # same month last year
        "v2026.12.3",  # next month
        "v2026.11",  # no N
        "v2026.11.",  # empty N
        "v2026.11.x",  # not a number
        "v2026.11.7-rc1",  # a suffix
        "v2026.11.8.1",  # an extra part
        "xv2026.11.9",  # a prefix
        "V2026.11.9",  # another case
        "v2026.3.9",  # unpadded month
        "v2026x11x9",  # '.' is literal, not "any character"
        "v1.0.0",
        "release-12",
    }
    assert next_tag_name(DEFAULT, taken, NOV_2026) == "v2026.11.1"
    assert next_tag_name(DEFAULT, taken | {"v2026.11.2"}, NOV_2026) == "v2026.11.3"


def test_unpadded_month_tags_do_not_count_for_a_padded_format() -> None:
    assert next_tag_name(DEFAULT, {"v2026.3.4"}, MAR_2026) == "v2026.03.1"
    assert next_tag_name(DEFAULT, {"v2026.03.4"}, MAR_2026) == "v2026.03.5"


def test_tag_pattern_matches_this_months_names_and_captures_n() -> None:
    pattern = tag_pattern(DEFAULT, NOV_2026)
    m = pattern.match("v2026.11.42")
    assert m is not None
    assert m.group(1) == "42"
    for name in ["v2026.11.42-rc1", "v2026.11.", "xv2026.11.1", "v2026.10.1", "v2026a11.1",
                 "v2026.11.4 2"]:
        assert pattern.match(name) is None, name


def test_the_next_name_matches_the_pattern_and_is_new() -> None:
    taken = {"v2026.11.1", "v2026.11.2"}
    name = next_tag_name(DEFAULT, taken, NOV_2026)
    assert tag_pattern(DEFAULT, NOV_2026).match(name)
    assert name not in taken


def test_the_same_inputs_give_the_same_name() -> None:
    """Only the arguments count: not earlier calls, not the order in which names were seen."""
    names = ["v2026.11.1", "v2026.10.9", "v2026.11.12", "v2026.11.3"]
    taken = set(names)
    assert [next_tag_name(DEFAULT, taken, NOV_2026) for _ in range(2)] == ["v2026.11.13"] * 2
    assert taken == set(names)  # the name it returns is not taken on the caller's behalf
    answers = {next_tag_name(DEFAULT, _InOrder(order), NOV_2026)
               for order in itertools.permutations(names)}
    assert answers == {"v2026.11.13"}


class _InOrder(set[str]):
    """A set that iterates in the order it was given, to vary what a set's order cannot."""

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__(names)
        self.names = names

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)


# --- custom formats ----------------------------------------------------------------------------


def test_custom_format_without_month_counts_over_the_year() -> None:
    fmt = "rel-{year}-{n}"
    taken = {"rel-2026-4", "rel-2026-12", "rel-2025-40", "v2026.11.99"}
    assert next_tag_name(fmt, taken, NOV_2026) == "rel-2026-13"
    assert next_tag_name(fmt, taken, MAR_2026) == "rel-2026-13"
    assert next_tag_name(fmt, set(), NOV_2026) == "rel-2026-1"


def test_custom_format_with_only_n() -> None:
    fmt = "build/{n}"
    assert next_tag_name(fmt, {"build/7", "build/x", "builds/9"}, NOV_2026) == "build/8"


def test_custom_format_with_unpadded_month_and_regex_characters() -> None:
    fmt = "r{year}+{month}.{n}"
    assert tag_pattern(fmt, MAR_2026).pattern == r"^r2026\+3\.([0-9]+)$"
    taken = {"r2026+3.2", "r20266.3", "r2026+3x5", "r2026+03.8"}
    assert next_tag_name(fmt, taken, MAR_2026) == "r2026+3.3"


@pytest.mark.parametrize(
    "fmt",
    ["v{year}.{month:02d}.{n}", "rel-{year}-{n}", "build/{n}", "{year}.{month}.{n}-lts"],
)
def test_accepted_formats_give_valid_tag_names(fmt: str) -> None:
    cfg = config.parse(f"[integration]\ntag_format = '{fmt}'\n")
    assert cfg.integration.tag_format == fmt
    name = next_tag_name(fmt, set(), NOV_2026)
    assert tag_pattern(fmt, NOV_2026).match(name)
    assert next_tag_name(fmt, {name}, NOV_2026) != name
