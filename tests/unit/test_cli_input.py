"""The command line refuses bad input in one line naming what was wrong, before it starts anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli import _banner, app
from hub.config import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    monkeypatch.chdir(tmp_path)  # a command that got past its check writes ./ketenhub.db here
    for name in list(os.environ):
        if name.startswith("KETENHUB_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    "argv",
    [["run", "--port", "99999"], ["run", "--port", "-5"], ["simulate", "verwijsindex", "--port", "99999"]],
)
def test_a_port_out_of_range_is_refused_naming_the_option(argv: list[str]) -> None:
    """`run --port 99999` ended in an OverflowError traceback from bind(); the simulator said it ran on
    port 99999."""
    done = CliRunner().invoke(app, argv)
    assert done.exit_code == 2 and "--port" in done.output, done.output
    assert "Traceback" not in done.output and not isinstance(done.exception, OverflowError)


@pytest.mark.parametrize("organisation", ["", "   ", "west\tjongerenwerk"])
def test_a_blank_or_unprintable_organisation_is_refused(organisation: str) -> None:
    """A blank name (an unset "$ORG") took the type's topic, and no command gives a topic back."""
    done = CliRunner().invoke(app, ["partners", "delivery", organisation, "--type", "wijkteam", "--kafka"])
    assert done.exit_code == 2, done.output
    assert (
        done.stderr == "ketenhub: ORGANISATION must be 1 to 100 printable characters, as handovers name it\n"
    )


def test_a_bad_setting_with_a_webhook_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The webhook's check loaded the settings unguarded: a bad one ended in two tracebacks."""
    monkeypatch.setenv("KETENHUB_HTTP__PORT", "eighty")
    argv = ["partners", "delivery", "wijkteam-west", "--type", "wijkteam", "--webhook", "https://w.example/"]
    done = CliRunner().invoke(app, argv)
    assert done.exit_code == 2, done.output
    assert done.stderr.startswith("ketenhub: configuration error: KETENHUB_HTTP__PORT:")
    assert done.stderr.count("\n") == 1


def test_the_banner_points_at_the_operator_console() -> None:
    """It pointed at `/`, where nothing is served: a first look at the hub was a 404."""
    banner = _banner(load_settings(), "127.0.0.1", 8000, "127.0.0.1:9092")
    assert "http://127.0.0.1:8000/ops/" in banner and "http://127.0.0.1:8000/ " not in banner


@pytest.mark.parametrize(
    "url", ["http://wijkteam.example/hook", "http://127.0.0.1:8080/hook", "ftp://w.example/"]
)
def test_a_webhook_that_is_not_https_is_refused_naming_the_setting_that_allows_it(url: str) -> None:
    argv = ["partners", "delivery", "wijkteam-west", "--type", "wijkteam", "--webhook", url]
    done = CliRunner().invoke(app, argv)
    assert done.exit_code == 2, done.output
    assert done.stderr.startswith("ketenhub: --webhook: webhook URL must be https://")
    assert "KETENHUB_HANDOVERS__ALLOW_PLAIN_HTTP=true" in done.stderr
