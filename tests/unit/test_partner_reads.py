"""The partner read limit: the write limit's token bucket with a noun of its own, reads and writes
counted apart, a refusal that says nothing was read, a log line a minute, and defaults an honest
reader never reaches but that hold a loop far below the store. Its clock is injected: no test waits."""

from __future__ import annotations

import pytest
import structlog

from hub.api.limits import PartnerRate, noun_of
from hub.api.problems import Problem
from hub.config import HttpSettings, load_settings
from hub.errors import ConfigError
from tests.unit.test_partner_writes import Clock


def test_gets_are_reads_writes_are_the_rest_and_options_neither() -> None:
    assert [noun_of(m) for m in ("GET", "HEAD")] == ["read", "read"]
    assert [noun_of(m) for m in ("POST", "PUT", "PATCH", "DELETE")] == ["write"] * 4
    assert noun_of("OPTIONS") is None


def test_a_refused_read_is_a_429_problem_saying_nothing_was_read() -> None:
    reads = PartnerRate(0.5, 1, "read", clock=Clock())
    reads.take("zaaksysteem")
    with pytest.raises(Problem) as refused:
        reads.take("zaaksysteem")
    problem = refused.value
    assert (problem.status, problem.title) == (429, "Te veel verzoeken")
    assert problem.headers == {"Retry-After": "2"}
    assert problem.detail is not None
    assert "niets gelezen" in problem.detail and "over 2 seconden opnieuw" in problem.detail
    assert "0,5 leesverzoeken per seconde, 1 achter elkaar" in problem.detail
    assert "opgeslagen" not in problem.detail  # a read stores nothing: it is not told it did not


def test_a_partners_reads_and_writes_take_from_buckets_of_their_own() -> None:
    clock = Clock()
    reads, writes = PartnerRate(1, 1, "read", clock=clock), PartnerRate(1, 1, "write", clock=clock)
    assert reads.wait_s("zaaksysteem") == 0
    assert reads.wait_s("zaaksysteem") == 1
    assert writes.wait_s("zaaksysteem") == 0  # reading in a loop does not stop its writes


def test_a_partner_reading_in_a_loop_is_logged_once_a_minute_by_its_id() -> None:
    clock = Clock()
    reads = PartnerRate(0.01, 1, "read", clock=clock)  # a token every 100 s: each call below refused
    with structlog.testing.capture_logs() as logs:
        reads.wait_s("partner-id")
        clock.now += 0.1
        reads.wait_s("partner-id")  # the first refusal: logged
        for _ in range(590):  # a hundred a second for 59 seconds: not again
            clock.now += 0.1
            reads.wait_s("partner-id")
        assert len(logs) == 1
        clock.now += 1.5  # a minute after the first refusal
        reads.wait_s("partner-id")
    line = {"event": "partner read rate reached", "partner_id": "partner-id", "rate_per_s": 0.01}
    assert logs == [line | {"log_level": "warning"}] * 2  # its id and the rate, never a name


def _refused(reads: PartnerRate, gaps_s: list[float], clock: Clock) -> int:
    refused = 0
    for gap in gaps_s:
        clock.now += gap
        refused += reads.wait_s("zaaksysteem") > 0
    return refused


def test_the_read_defaults_never_refuse_a_busy_case_system() -> None:
    """The busiest honest reader, for a working day: the case system reads every active signal, open
    handover and consent of Halt Den Haag (a few thousand) as fast as the hub answers, every five
    minutes; meanwhile sixty caseworkers each open a case (five reads) every ten seconds."""
    http = HttpSettings()
    clock = Clock()
    reads = PartnerRate(http.partner_reads_per_s, http.partner_read_burst, "read", clock=clock)
    sweep, answered_per_s, clicks_per_s = 3_000, 2_000, 60 * 5 / 10
    for _ in range(8 * 12):
        assert _refused(reads, [1 / answered_per_s] * sweep, clock) == 0
        rest_s = 300 - sweep / answered_per_s
        assert _refused(reads, [1 / clicks_per_s] * int(rest_s * clicks_per_s), clock) == 0


def test_the_read_defaults_hold_a_loop_far_below_what_the_store_takes() -> None:
    """A partner reading in a loop, each read an audit entry, as fast as a hub process answers (over
    a thousand a second): after the burst it is served 50 a second, not 1,000."""
    http = HttpSettings()
    clock = Clock()
    reads = PartnerRate(http.partner_reads_per_s, http.partner_read_burst, "read", clock=clock)
    offered = 1_000 * 600  # ten minutes
    served = offered - _refused(reads, [1 / 1_000] * offered, clock)
    assert served <= http.partner_read_burst + 50 * 600 + 1
    assert (served - http.partner_read_burst) / 600 <= 50


@pytest.fixture
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("KETENHUB_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("_clean_env")
def test_the_read_limit_is_configured_under_http_apart_from_the_write_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = load_settings().http
    assert (defaults.partner_reads_per_s, defaults.partner_read_burst) == (50, 3_000)
    monkeypatch.setenv("KETENHUB_HTTP__PARTNER_READS_PER_S", "2.5")
    monkeypatch.setenv("KETENHUB_HTTP__PARTNER_READ_BURST", "20")
    http = load_settings().http
    assert (http.partner_reads_per_s, http.partner_read_burst) == (2.5, 20)
    assert (http.partner_writes_per_s, http.partner_write_burst) == (5_000, 10_000)
    monkeypatch.setenv("KETENHUB_HTTP__PARTNER_READS_PER_S", "0")  # no limit
    assert load_settings().http.partner_reads_per_s == 0
    for name, bad in (
        ("PARTNER_READS_PER_S", "-1"),
        ("PARTNER_READS_PER_S", "nan"),
        ("PARTNER_READ_BURST", "0"),
    ):
        monkeypatch.setenv(f"KETENHUB_HTTP__{name}", bad)
        with pytest.raises(ConfigError, match=f"KETENHUB_HTTP__{name}"):
            load_settings()
        monkeypatch.delenv(f"KETENHUB_HTTP__{name}")
