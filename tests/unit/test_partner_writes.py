"""The partner write limit: a token bucket per partner, an honest Retry-After, defaults the benchmarks
never reach. Its clock is injected: no test waits."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hub.api.limits import PartnerRate
from hub.api.problems import Problem
from hub.config import HttpSettings, load_settings
from hub.errors import ConfigError


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_one_write_per_token_and_the_wait_says_when() -> None:
    clock = Clock()
    writes = PartnerRate(0.25, 3, "write", clock=clock)
    assert [writes.wait_s("politie") for _ in range(3)] == [0, 0, 0]
    assert writes.wait_s("politie") == 4  # one token in 1 / 0.25 s
    assert writes.wait_s("politie") == 4  # a refusal takes no token: the wait does not grow
    clock.now += 3.5
    assert writes.wait_s("politie") == 1  # half a second to go: a whole second, never 0
    clock.now += 0.5
    assert writes.wait_s("politie") == 0
    assert writes.wait_s("politie") == 4


def test_each_partner_has_its_own_bucket() -> None:
    writes = PartnerRate(1, 1, "write", clock=Clock())
    assert writes.wait_s("politie") == 0
    assert writes.wait_s("politie") == 1
    assert writes.wait_s("boa") == 0  # the police's loop does not hold the BOA back


def test_a_quiet_partner_saves_up_no_more_than_the_burst() -> None:
    clock = Clock()
    writes = PartnerRate(10, 5, "write", clock=clock)
    writes.wait_s("politie")
    clock.now += 3600
    assert [writes.wait_s("politie") for _ in range(6)] == [0] * 5 + [1]


def test_rate_zero_is_no_limit() -> None:
    writes = PartnerRate(0, 1, "write", clock=Clock())
    assert all(writes.wait_s("politie") == 0 for _ in range(10_000))


def test_a_refusal_is_a_429_problem_saying_what_to_do() -> None:
    writes = PartnerRate(0.5, 1, "write", clock=Clock())
    writes.take("politie")
    with pytest.raises(Problem) as refused:
        writes.take("politie")
    problem = refused.value
    assert (problem.status, problem.title) == (429, "Te veel verzoeken")
    assert problem.headers == {"Retry-After": "2"}
    assert problem.detail is not None
    assert "niets opgeslagen" in problem.detail and "over 2 seconden opnieuw" in problem.detail
    assert "0,5 verzoeken per seconde" in problem.detail


@given(
    rate=st.floats(min_value=0.01, max_value=10_000),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=5), max_size=60),
)
@example(rate=1 / 3, burst=1, gaps=[0.0, 1.0])  # 2/3 of a token at 1/3 a second: 2 s, not 3
def test_waiting_the_retry_after_given_is_always_enough(rate: float, burst: int, gaps: list[float]) -> None:
    """Honest: a partner that waits the Retry-After it got (and sends nothing meanwhile) gets through;
    and it was told no more than a second too much."""
    clock = Clock()
    writes = PartnerRate(rate, burst, "write", clock=clock)
    for gap in gaps:
        clock.now += gap
        wait = writes.wait_s("p")
        if wait:
            assert wait >= 1
            clock.now += wait - 1
            assert wait == 1 or writes.wait_s("p") > 0  # a second less would not have been enough
            clock.now += 1
            assert writes.wait_s("p") == 0


@pytest.mark.parametrize("served_per_s", [1_500, 4_500])
def test_the_defaults_never_refuse_the_http_benchmark(served_per_s: int) -> None:
    """`bench.httpcpu` sends 1,000 requests and then 20,000 from one partner, as fast as the hub takes
    them (about 1,500/s on the bench machine); a hub three times as fast is not refused either."""
    http = HttpSettings()
    clock = Clock()
    writes = PartnerRate(http.partner_writes_per_s, http.partner_write_burst, "write", clock=clock)
    refused = 0
    for _ in range(21_000):
        clock.now += 1 / served_per_s
        refused += writes.wait_s("bench") > 0
    assert refused == 0


@pytest.fixture
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("KETENHUB_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("_clean_env")
def test_the_limit_is_configured_per_process_under_http(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings().http
    assert (defaults.partner_writes_per_s, defaults.partner_write_burst) == (5_000, 10_000)
    monkeypatch.setenv("KETENHUB_HTTP__PARTNER_WRITES_PER_S", "2.5")
    monkeypatch.setenv("KETENHUB_HTTP__PARTNER_WRITE_BURST", "20")
    http = load_settings().http
    assert (http.partner_writes_per_s, http.partner_write_burst) == (2.5, 20)
    monkeypatch.setenv("KETENHUB_HTTP__PARTNER_WRITES_PER_S", "0")  # no limit
    assert load_settings().http.partner_writes_per_s == 0
    for name, bad in (
        ("PARTNER_WRITES_PER_S", "-1"),
        ("PARTNER_WRITES_PER_S", "inf"),
        ("PARTNER_WRITE_BURST", "0"),
    ):
        monkeypatch.setenv(f"KETENHUB_HTTP__{name}", bad)
        with pytest.raises(ConfigError, match=f"KETENHUB_HTTP__{name}"):
            load_settings()
        monkeypatch.delenv(f"KETENHUB_HTTP__{name}")
