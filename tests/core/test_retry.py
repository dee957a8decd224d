"""The retry policy: exponential delays between attempts, capped, validated."""

from __future__ import annotations

import logging

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


def test_run_tries_until_nothing_is_left_and_logs_each_failure(caplog: pytest.LogCaptureFixture) -> None:
    left = ["a", "b"]

    def attempt() -> str | None:
        left.pop()
        return f"{len(left)} left" if left else None

    log = logging.getLogger("dicomnode.test.retry")
    with caplog.at_level(logging.INFO, logger="dicomnode.test.retry"):
        assert Backoff(attempts=3, first_delay=0.0, max_delay=0.0).run(attempt, log, "C-STORE to X") == 2
    assert [(record.levelname, record.getMessage()) for record in caplog.records] == [
        ("WARNING", "C-STORE to X: attempt 1 of 3 failed: 1 left; retrying in 0 s")]


def test_run_gives_up_after_the_last_attempt_with_an_error_line(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def attempt() -> str | None:
        calls.append(1)
        return "refused"

    log = logging.getLogger("dicomnode.test.retry")
    with caplog.at_level(logging.INFO, logger="dicomnode.test.retry"):
        assert Backoff(attempts=2, first_delay=0.0, max_delay=0.0).run(attempt, log, "STOW-RS to Y") == 2
    assert len(calls) == 2
    assert caplog.records[-1].levelname == "ERROR"
    assert caplog.records[-1].getMessage() == "STOW-RS to Y: attempt 2 of 2 failed, giving up: refused"
