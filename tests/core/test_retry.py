"""The retry policy: exponential delays between attempts, capped, validated."""

from __future__ import annotations

import pytest

from dicomnode.errors import ConfigurationError
from dicomnode.extension.retry import Backoff


def test_the_delay_doubles_after_each_failure_up_to_the_maximum() -> None:
    backoff = Backoff(attempts=7, first_delay=0.5, max_delay=5.0)

    assert list(backoff.delays()) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_there_is_one_wait_fewer_than_attempts() -> None:
    assert list(Backoff(attempts=1).delays()) == []
    assert len(list(Backoff(attempts=5).delays())) == 4


def test_a_huge_number_of_failures_stays_at_the_maximum() -> None:
    assert Backoff(first_delay=1.0, max_delay=3600.0).delay(10_000) == 3600.0


def test_a_zero_first_delay_retries_at_once() -> None:
    assert list(Backoff(attempts=3, first_delay=0, max_delay=0).delays()) == [0.0, 0.0]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"attempts": 0}, "attempts must be a whole number of at least 1, got 0"),
        ({"attempts": 2.5}, "attempts must be a whole number of at least 1, got 2.5"),
        ({"attempts": True}, "attempts must be a whole number of at least 1, got True"),
        ({"first_delay": -0.1}, "first_delay must be a number of seconds >= 0, got -0.1"),
        ({"max_delay": "soon"}, "max_delay must be a number of seconds >= 0, got 'soon'"),
        ({"first_delay": 10, "max_delay": 5}, r"max_delay \(5 s\) must not be smaller than first_delay \(10 s\)"),
    ],
)
def test_bad_settings_say_what_is_allowed(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Backoff(**settings)  # type: ignore[arg-type]
