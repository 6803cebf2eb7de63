"""Settings: defaults, environment names, and one clear line for a bad setting."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hub.config import DEFAULT_DB_URL, load_settings
from hub.errors import ConfigError

GOOD_SECRET = "x" * 40


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("KETENHUB_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_embedded_hub() -> None:
    s = load_settings()
    assert s.embedded_broker
    assert s.database.url == DEFAULT_DB_URL == "sqlite+aiosqlite:///./ketenhub.db"
    assert (s.http.host, s.http.port) == ("127.0.0.1", 8000)
    assert s.smtp.host is None and s.verwijsindex.url is None


def test_nested_names_use_double_underscore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETENHUB_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("KETENHUB_DATABASE__URL", "postgresql+asyncpg://hub@db/hub")
    monkeypatch.setenv("KETENHUB_HTTP__HOST", "0.0.0.0")
    monkeypatch.setenv("KETENHUB_HTTP__PORT", "9000")
    monkeypatch.setenv("KETENHUB_SMTP__HOST", "smtp.example")
    monkeypatch.setenv("KETENHUB_SMTP__PORT", "2525")
    monkeypatch.setenv("KETENHUB_VERWIJSINDEX__URL", "https://vi.example")
    monkeypatch.setenv("KETENHUB_SECRET", GOOD_SECRET)
    s = load_settings()
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9092" and not s.embedded_broker
    assert s.database.url.startswith("postgresql+asyncpg://")
    assert (s.http.host, s.http.port) == ("0.0.0.0", 9000)
    assert (s.smtp.host, s.smtp.port) == ("smtp.example", 2525)
    assert s.verwijsindex.url == "https://vi.example"
    assert s.secret_value() == GOOD_SECRET


def test_bad_port_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETENHUB_HTTP__PORT", "eighty")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith("KETENHUB_HTTP__PORT:")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("KETENHUB_SMTP__TSL", "KETENHUB_SMTP__TSL: no setting of the hub (did you mean KETENHUB_SMTP__TLS?"),
        ("ketenhub_log_levl", "KETENHUB_LOG_LEVL: no setting of the hub (did you mean KETENHUB_LOG_LEVEL?"),
        ("KETENHUB_KAFKA_BOOTSTRAP_SERVERS", "(did you mean KETENHUB_KAFKA__BOOTSTRAP_SERVERS?"),
        ("KETENHUB_TURBO", "KETENHUB_TURBO: no setting of the hub (the README's Configuration lists them;"),
    ],
)
def test_a_variable_that_is_no_setting_stops_start_up_naming_the_one_meant(
    monkeypatch: pytest.MonkeyPatch, name: str, said: str
) -> None:
    """A misspelt variable was ignored: `KETENHUB_SMTP__TSL=starttls` left mail to go out unencrypted
    on the default, and the hub started as though all were well."""
    monkeypatch.setenv(name, "starttls")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert said in str(err.value) and "starttls" not in str(err.value)


def test_a_misspelt_name_in_a_section_given_as_json_is_refused_without_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`KETENHUB_SMTP='{"host": "mail.example", "tsl": "starttls"}'` loaded with TLS off."""
    monkeypatch.setenv("KETENHUB_SMTP", '{"host": "mail.example", "pasword": "s3cr3t-pw"}')
    with pytest.raises(ConfigError) as err:
        load_settings()
    said = str(err.value)
    assert said.startswith(
        "KETENHUB_SMTP__PASWORD: no setting of the hub (did you mean KETENHUB_SMTP__PASSWORD?"
    )
    assert "s3cr3t-pw" not in said
    monkeypatch.setenv("KETENHUB_SMTP", '{"host": "mail.example", "tls": "starttls"}')
    assert load_settings().smtp.tls == "starttls"


def test_the_variables_of_compose_the_tests_and_a_mapping_setting_are_no_typo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("KETENHUB_VERSION", "KETENHUB_API_BIND", "KETENHUB_CHAOS_LONG", "KETENHUB_BENCH_LOOP"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("KETENHUB_VERWIJSINDEX__LETTER_SENDER__NAAM", "Halt Den Haag")  # a dict's key
    # what Kubernetes puts in every pod for the Service ketenhub-api: every pod refused to start
    for name in ("SERVICE_HOST", "SERVICE_PORT", "SERVICE_PORT_HTTP", "PORT", "PORT_80_TCP_ADDR"):
        monkeypatch.setenv(f"KETENHUB_API_{name}", "10.0.0.1")
    assert load_settings().verwijsindex.letter_sender.get("naam") == "Halt Den Haag"


@pytest.mark.parametrize(
    "url", ["notaurl", "vi.example/api", "ftp://vi.example/", "https://", "https://vi:99999/"]
)
def test_a_verwijsindex_url_that_is_no_http_url_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """ "notaurl" started the hub; every call then failed as one that may have been carried out, and
    each registration was dead-lettered and audited as possibly in the index."""
    monkeypatch.setenv("KETENHUB_VERWIJSINDEX__URL", url)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith("KETENHUB_VERWIJSINDEX__URL: ") and "e.g. https://" in str(err.value)


@pytest.mark.parametrize(
    "servers", ["kafka:90x2", "[::1", "kafka:0", "kafka:70000", ",", "[zz::1]:9092", "SASL_SSL://kafka:9093"]
)
def test_bootstrap_servers_that_are_no_host_and_port_stop_start_up(
    monkeypatch: pytest.MonkeyPatch, servers: str
) -> None:
    """They were accepted, and every command that asked the brokers failed with a traceback."""
    monkeypatch.setenv("KETENHUB_KAFKA__BOOTSTRAP_SERVERS", servers)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith("KETENHUB_KAFKA__BOOTSTRAP_SERVERS: ") and "e.g. kafka-0:9092" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "servers",
    [
        "kafka:9092",
        "kafka-0:9092,kafka-1:9093",
        "[fd00::1]:9092",
        "kafka_1",
        "10.0.0.5:9093",
        # as the Kafka client reads them too: a bare IPv6 address, a zone, a trailing dot or comma
        "fd00::1",
        "[fe80::1%eth0]:9092",
        "kafka.example.nl.:9092",
        "kafka-0:9092,kafka-1:9092,",
    ],
)
def test_bootstrap_servers_as_brokers_are_named_are_taken(
    monkeypatch: pytest.MonkeyPatch, servers: str
) -> None:
    monkeypatch.setenv("KETENHUB_KAFKA__BOOTSTRAP_SERVERS", servers)
    monkeypatch.setenv("KETENHUB_SECRET", "s" * 40)
    assert load_settings().kafka.bootstrap_servers == servers


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("KETENHUB_VERWIJSINDEX__ORGANISATIE_CODE", "a" * 51, "at most 50 characters"),
        ("KETENHUB_VERWIJSINDEX__ORGANISATIE_NAAM", "", "at least 1 character"),
        (
            "KETENHUB_VERWIJSINDEX__LETTER_SENDER",
            '{"telefon": "070 123 4567"}',
            "telefon: not a key of the letter's sender",
        ),
        (
            "KETENHUB_VERWIJSINDEX__LETTER_SENDER",
            '{"telefoon": "1"}',
            "telefoon: String should have at least 6",
        ),
        # the hub sends without SMTPUTF8: no mail could be built with these senders
        ("KETENHUB_SMTP__SENDER", "zoë@halt.nl", "an address in ASCII"),
        ("KETENHUB_SMTP__SENDER", "ketenhub", "an address in ASCII"),
    ],
)
def test_what_the_verwijsindex_the_parent_letter_or_a_mail_cannot_take_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    """An organisation code or name the index's contract refuses started the hub, and the connector then
    failed to start with a traceback; a letter sender with a misspelt key started it too, and every
    parent letter was a 500."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith(f"{variable}: ") and says in str(err.value), str(err.value)


def test_the_readmes_configuration_lists_every_setting() -> None:
    """A variable that is no setting stops start-up pointing at this list; it left out 21 settings,
    the organisation code the index knows Halt by among them. A row may name a section's further
    settings by their part after `__` (`KETENHUB_SMTP__HOST` / `__PORT`)."""
    from hub.config import setting_names

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed = readme[readme.index("## Configuration") : readme.index("## Commands")]
    rows = [line for line in listed.splitlines() if line.startswith("| `KETENHUB_")]

    def in_a_row(name: str) -> bool:
        section, _, field = name.partition("__")
        return f"`{name}`" in listed or any(
            row.startswith(f"| `{section}__") and f"`__{field}`" in row for row in rows
        )

    names = setting_names()
    sections = {n for n in names if any(m.startswith(f"{n}__") for m in names)}  # KETENHUB_SMTP
    assert sorted(n for n in names - sections if not in_a_row(n)) == []


def test_unknown_database_driver_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETENHUB_DATABASE__URL", "mysql://x")
    with pytest.raises(ConfigError, match="^KETENHUB_DATABASE__URL"):
        load_settings()


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("sqlite+aiosqlite:///:memory:", "a SQLite database must be a file"),
        ("sqlite+aiosqlite://", "a SQLite database must be a file"),
        ("sqlite+aiosqlite:///", "a SQLite database must be a file"),
        ("postgresql+asyncpg://hub:pw@db/hub?sslmode=require", "asyncpg takes ?ssl=require"),
    ],
)
def test_a_database_url_the_driver_would_fail_on_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, url: str, said: str
) -> None:
    """Each of these passed the check and ended every command in a traceback: SQLAlchemy gives an
    in-memory database a pool that refuses the hub's pool settings, and asyncpg has no `sslmode`."""
    monkeypatch.setenv("KETENHUB_DATABASE__URL", url)
    with pytest.raises(ConfigError, match=f"^KETENHUB_DATABASE__URL: {re.escape(said)}") as err:
        load_settings()
    assert "pw" not in str(err.value)
    monkeypatch.setenv("KETENHUB_DATABASE__URL", "postgresql+asyncpg://hub:pw@db/hub?ssl=require")
    assert load_settings().database.url.endswith("?ssl=require")


def test_secret_required_outside_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETENHUB_KAFKA__BOOTSTRAP_SERVERS", "k1:9092")
    with pytest.raises(ConfigError, match="^KETENHUB_SECRET: .*required"):
        load_settings()


@pytest.mark.parametrize("value", ["changeme", "short-secret"])
def test_placeholder_or_short_secret_refused_and_not_echoed(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("KETENHUB_SECRET", value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith("KETENHUB_SECRET")
    assert value not in str(err.value)


def test_embedded_secret_is_random_and_kept(tmp_path: Path) -> None:
    a = load_settings(state_dir=tmp_path)
    first = a.ensure_secret()  # `ketenhub run`: made the first time
    assert len(first) >= 32 and first == load_settings(state_dir=tmp_path).ensure_secret()
    assert load_settings(state_dir=tmp_path).secret_value() == first
    assert (tmp_path / "ketenhub.secret").stat().st_mode & 0o077 == 0
    assert [p.name for p in tmp_path.iterdir()] == ["ketenhub.secret"]  # nothing half-made beside it
    other = tmp_path / "other"
    other.mkdir()
    assert load_settings(state_dir=other).ensure_secret() != first


def test_only_run_makes_the_secret_any_other_use_without_one_is_refused_naming_what_to_set(
    tmp_path: Path,
) -> None:
    """secret_value() made a new random secret wherever it was called without one (`ketenhub inzage`
    in another directory): youth keys that found nothing, and an export that said so."""
    with pytest.raises(ConfigError) as err:
        load_settings(state_dir=tmp_path).secret_value()
    said = str(err.value)
    assert said.startswith("KETENHUB_SECRET: not set, and there is no ") and "\n" not in said
    assert str(tmp_path / "ketenhub.secret") in said and "KETENHUB_STATE_DIR" in said
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "ketenhub.secret").write_text("\n")
    with pytest.raises(ConfigError, match="^KETENHUB_STATE_DIR: .* holds no secret"):
        load_settings(state_dir=tmp_path).secret_value()


def test_run_in_a_state_dir_that_is_not_there_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^KETENHUB_STATE_DIR: .*missing is not a directory"):
        load_settings(state_dir=tmp_path / "missing").ensure_secret()


@pytest.mark.parametrize(
    ("name", "value", "read"),
    [
        ("KETENHUB_COMPONENTS", "intake,mail", ["intake", "mail"]),
        ("KETENHUB_COMPONENTS", " intake , mail ", ["intake", "mail"]),
        ("KETENHUB_COMPONENTS", '["intake", "mail"]', ["intake", "mail"]),
        ("KETENHUB_COMPONENTS", "routing", ["routing"]),
        ("KETENHUB_VERWIJSINDEX__RETRY_SCHEDULE_S", "1,5,30", (1.0, 5.0, 30.0)),
        ("KETENHUB_SMTP__RETRY_SCHEDULE_S", "[2, 10]", (2.0, 10.0)),
        ("KETENHUB_HANDOVERS__RETRY_SCHEDULE_S", "60", (60.0,)),
        ("KETENHUB_HANDOVERS__RETRY_SCHEDULE_S", "[]", ()),  # no rungs: to the DLQ after in-place tries
        ("KETENHUB_HANDOVERS__ZORGMELDING_RECEIVERS", "x", ("x",)),
        ("KETENHUB_HANDOVERS__ZORGMELDING_RECEIVERS", "vt-haaglanden,vt-hollands-midden", None),
    ],
)
def test_a_list_is_taken_comma_separated_or_as_json(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, read: object
) -> None:
    """A list that was not JSON ended start-up in a SettingsError traceback of 90 lines."""
    monkeypatch.setenv(name, value)
    s = load_settings()
    section, _, field = name.removeprefix("KETENHUB_").lower().partition("__")
    got = getattr(getattr(s, section), field) if field else getattr(s, section)
    assert got == (read if read is not None else tuple(value.split(",")))


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("KETENHUB_COMPONENTS", '["intake",', 'a JSON list (["a", "b"])'),
        ("KETENHUB_COMPONENTS", "intake,,mail", "names separated by commas (a,b)"),
        ("KETENHUB_VERWIJSINDEX__RETRY_SCHEDULE_S", "[2, 7", "numbers separated by commas (1,5,30)"),
        ("KETENHUB_VERWIJSINDEX__LETTER_SENDER", "Halt Den Haag", "a JSON object"),
    ],
)
def test_a_value_that_cannot_be_read_is_one_line_naming_the_variable_and_the_form(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    said = str(err.value)
    assert said.startswith(f"{name}: expected ") and expected in said, said
    assert "\n" not in said and value not in said


@pytest.mark.parametrize("section", ["SMTP", "VERWIJSINDEX", "HANDOVERS"])
@pytest.mark.parametrize("value", ["[NaN]", "Infinity", "1e12", "1,-30", "0", "604801"])
def test_a_retry_delay_that_is_no_finite_wait_of_at_most_a_week_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, section: str, value: str
) -> None:
    """NaN, an infinity or 1e12 was taken, and the first transient failure raised in the retry ladder
    (ValueError, OverflowError); a negative delay tried again at once."""
    name = f"KETENHUB_{section}__RETRY_SCHEDULE_S"
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    said = str(err.value)
    assert said.startswith(f"{name}: each delay must be a number of seconds above 0 and at most 604800")
    assert "\n" not in said


def test_the_longest_retry_delay_is_a_week(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETENHUB_SMTP__RETRY_SCHEDULE_S", "0.5,604800")
    assert load_settings().smtp.retry_schedule_s == (0.5, 604800.0)


def test_a_database_url_that_cannot_be_parsed_is_refused_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A port that is no number was taken, and every command ended in a ValueError traceback."""
    monkeypatch.setenv("KETENHUB_DATABASE__URL", "postgresql+asyncpg://hub:s3cr3t-pw@db:notaport/hub")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith("KETENHUB_DATABASE__URL: not a database URL")
    assert "s3cr3t-pw" not in str(err.value) and "notaport" not in str(err.value)


def _a_ca(folder: Path) -> Path:
    """A self-signed CA certificate, as Strimzi makes its cluster CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    ca = folder / "ca.crt"
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(ca) + ".key"]
    subprocess.run(
        ["openssl", "req", "-x509", *key, "-out", str(ca), "-days", "2", "-subj", "/CN=cluster-ca-test"],
        check=True,
        capture_output=True,
    )
    return ca


def test_the_brokers_ca_file_is_used_for_tls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """SASL_SSL had no CA setting: the system's trust store only, which lacks Strimzi's own cluster CA."""
    from faststream.security import BaseSecurity, SASLScram512

    from hub.kafka import client_options, faststream_security

    ca = _a_ca(tmp_path)
    monkeypatch.setenv("KETENHUB_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KETENHUB_KAFKA__SSL_CAFILE", str(ca))
    kafka = load_settings().kafka
    assert kafka.ssl_cafile == ca

    def cas(context: object) -> list[object]:
        return [c["subject"] for c in context.get_ca_certs()]  # type: ignore[attr-defined]

    trusted = ((("commonName", "cluster-ca-test"),),)
    assert cas(client_options(kafka, "k:9093")["ssl_context"]) == [trusted]
    security = faststream_security(kafka)
    assert isinstance(security, SASLScram512) and cas(security.ssl_context) == [trusted]
    tls_only = faststream_security(kafka.model_copy(update={"security_protocol": "SSL"}))
    assert type(tls_only) is BaseSecurity and tls_only.use_ssl and cas(tls_only.ssl_context) == [trusted]


@pytest.mark.parametrize(
    ("protocol", "file", "said"),
    [
        ("SASL_SSL", "missing.crt", "no such file"),
        ("SSL", "not-a-cert.crt", "holds no PEM certificate"),
        ("SASL_PLAINTEXT", "ca.crt", "is for TLS: set KETENHUB_KAFKA__SECURITY_PROTOCOL to SSL or SASL_SSL"),
    ],
)
def test_a_brokers_ca_file_that_cannot_be_used_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, protocol: str, file: str, said: str
) -> None:
    (tmp_path / "not-a-cert.crt").write_text("hello\n")
    (tmp_path / "ca.crt").write_text("placeholder\n")
    monkeypatch.setenv("KETENHUB_KAFKA__SECURITY_PROTOCOL", protocol)
    monkeypatch.setenv("KETENHUB_KAFKA__SSL_CAFILE", str(tmp_path / file))
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith(f"KETENHUB_KAFKA__SSL_CAFILE: {said}"), str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_component_refused() -> None:
    with pytest.raises(ConfigError, match="^KETENHUB_COMPONENTS"):
        load_settings(components=["intake", "teleport"])


def test_today_is_the_dutch_calendar_day() -> None:
    from datetime import UTC, date, datetime

    from hub.clock import today

    assert today(lambda: datetime(2026, 12, 1, 22, 59, tzinfo=UTC)) == date(2026, 12, 1)
    assert today(lambda: datetime(2026, 12, 1, 23, 0, tzinfo=UTC)) == date(2026, 12, 2)  # CET, UTC+1
    assert today(lambda: datetime(2026, 7, 1, 21, 59, tzinfo=UTC)) == date(2026, 7, 1)
    assert today(lambda: datetime(2026, 7, 1, 22, 0, tzinfo=UTC)) == date(2026, 7, 2)  # CEST, UTC+2


def test_a_password_in_a_urls_query_or_user_part_is_never_shown() -> None:
    """asyncpg takes a password as `?password=`, which SQLAlchemy's own rendering prints as it is:
    the startup log line, the banner and the secret check's error showed it. The Verwijsindex URL,
    which can only carry credentials in itself, was shown whole in the banner."""
    from types import SimpleNamespace

    from connectors.verwijsindex.component import NAME, VerwijsindexConnector, banner_lines
    from hub.cli_errors import shown_url
    from hub.store import Store

    url = "postgresql+asyncpg://hub:pw-in-user@db:5432/ketenhub?password=pw-in-query&sslpassword=pw-ssl&ssl=require"
    for shown in (Store(url).describe(), shown_url(url)):
        assert "pw-" not in shown, shown
        assert shown.startswith("postgresql+asyncpg://hub:***@db:5432/ketenhub?") and "ssl=require" in shown
    connector = VerwijsindexConnector.__new__(VerwijsindexConnector)
    connector.simulator = None
    vi = "https://halt:vi-pass@vi.haaglanden.example:8443/api?token=vi-token"
    hub = SimpleNamespace(
        components={NAME: connector}, settings=SimpleNamespace(verwijsindex=SimpleNamespace(url=vi))
    )
    assert banner_lines(hub) == ["  verwijsindex  https://vi.haaglanden.example:8443/api"]


def test_a_setting_is_read_from_the_file_its_file_variable_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Compose mounted no secret: each was an environment variable, shown by `docker inspect`."""
    (tmp_path / "secret").write_text(GOOD_SECRET + "\n")  # `echo value > file` writes a line break
    (tmp_path / "kafka").write_text("kafka pw with a space ")  # only the line break goes
    (tmp_path / "pg").write_text("p@ss:w/rd")
    monkeypatch.setenv("KETENHUB_KAFKA__BOOTSTRAP_SERVERS", "k1:9092")
    monkeypatch.setenv("KETENHUB_SECRET_FILE", str(tmp_path / "secret"))
    monkeypatch.setenv("KETENHUB_KAFKA__SASL_PASSWORD_FILE", str(tmp_path / "kafka"))
    monkeypatch.setenv("KETENHUB_DATABASE__URL", "postgresql+asyncpg://ketenhub@db:5432/hub")
    monkeypatch.setenv("KETENHUB_DATABASE__PASSWORD_FILE", str(tmp_path / "pg"))
    s = load_settings()
    assert s.secret_value() == GOOD_SECRET
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == "kafka pw with a space "
    from sqlalchemy.engine import make_url

    url = make_url(s.database.url)  # the password put in, escaped as a URL needs
    assert (url.username, url.password, url.host, url.database) == ("ketenhub", "p@ss:w/rd", "db", "hub")


@pytest.mark.parametrize(
    ("setup", "said"),
    [
        ("missing", "KETENHUB_SECRET_FILE: cannot read {dir}/nothing: No such file or directory"),
        ("empty", "KETENHUB_SECRET_FILE: {dir}/empty is empty"),
        ("huge", "KETENHUB_SECRET_FILE: {dir}/huge is over 64 KiB; is it the right file?"),
        ("both", "KETENHUB_SECRET_FILE: KETENHUB_SECRET is set too; set one of them"),
        ("typo", "KETENHUB_SECRT_FILE: no setting of the hub (did you mean KETENHUB_SECRET_FILE?"),
        ("blank", "KETENHUB_SECRET_FILE: names no file; set it to the file's path, or unset it"),
    ],
)
def test_a_file_variable_that_cannot_be_used_stops_start_up_in_one_line_without_a_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, setup: str, said: str
) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "huge").write_text("s3cr3t" * 20_000)
    (tmp_path / "good").write_text("s3cr3t-value-of-at-least-32-characters!")
    file = {"missing": "nothing", "empty": "empty", "huge": "huge"}.get(setup, "good")
    path = "" if setup == "blank" else str(tmp_path / file)
    monkeypatch.setenv("KETENHUB_SECRT_FILE" if setup == "typo" else "KETENHUB_SECRET_FILE", path)
    if setup == "both":
        monkeypatch.setenv("KETENHUB_SECRET", "another-value-of-at-least-32-characters")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith(said.format(dir=tmp_path)), str(err.value)
    assert "s3cr3t" not in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("postgresql+asyncpg://hub:other@db/hub", "holds a password too"),
        ("postgresql+asyncpg://hub@db/hub?password=other", "holds a password too"),  # asyncpg takes it
        ("sqlite+aiosqlite:///./hub.db", "only for a postgresql+asyncpg:// URL"),
    ],
)
def test_a_database_password_apart_is_refused_where_it_cannot_be_the_one_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, said: str
) -> None:
    """Two passwords: which one the hub logs in with would be a guess. SQLite takes none."""
    (tmp_path / "pg").write_text("s3cr3t")
    monkeypatch.setenv("KETENHUB_DATABASE__URL", url)
    monkeypatch.setenv("KETENHUB_DATABASE__PASSWORD_FILE", str(tmp_path / "pg"))
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith("KETENHUB_DATABASE__PASSWORD_FILE: ") and said in str(err.value)
    assert "s3cr3t" not in str(err.value) and "other" not in str(err.value)


def test_a_value_read_from_a_file_is_never_shown_and_its_file_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A file variable pointing at the wrong mount (another setting's password) printed that
    password in the refusal: `KETENHUB_SMTP__PORT: ... (got 'hunter2')`."""
    (tmp_path / "pw").write_text("hunter2\n")
    monkeypatch.setenv("KETENHUB_SMTP__PORT_FILE", str(tmp_path / "pw"))
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith("KETENHUB_SMTP__PORT_FILE: ") and "hunter2" not in str(err.value)
    monkeypatch.delenv("KETENHUB_SMTP__PORT_FILE")
    (tmp_path / "smtp").write_text('{"port": "hunter2"}')  # a whole section from a file
    monkeypatch.setenv("KETENHUB_SMTP_FILE", str(tmp_path / "smtp"))
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith("KETENHUB_SMTP__PORT: ") and "hunter2" not in str(err.value)
    monkeypatch.delenv("KETENHUB_SMTP_FILE")
    for name in ("KETENHUB_COMPONENTS_FILE", "KETENHUB_SMTP__RETRY_SCHEDULE_S_FILE"):  # the hub's own checks
        (tmp_path / "value").write_text("hunter2" if "COMPONENTS" in name else "[1, -77]")
        monkeypatch.setenv(name, str(tmp_path / "value"))
        with pytest.raises(ConfigError) as err:
            load_settings()
        said = str(err.value)
        assert said.startswith(f"{name}: its file does not hold a valid value"), said
        assert "hunter2" not in said and "77" not in said, said
        monkeypatch.delenv(name)


def test_a_setting_from_a_file_and_in_its_section_given_as_json_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The file's password silently replaced the section's: which one was meant is a guess."""
    (tmp_path / "pg").write_text("s3cr3t")
    monkeypatch.setenv("KETENHUB_DATABASE", '{"url": "postgresql+asyncpg://hub@db/hub", "password": "other"}')
    monkeypatch.setenv("KETENHUB_DATABASE__PASSWORD_FILE", str(tmp_path / "pg"))
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert (
        str(err.value) == "KETENHUB_DATABASE__PASSWORD_FILE: KETENHUB_DATABASE gives it too; set one of them"
    )


@pytest.mark.parametrize(
    ("name", "said"),
    [
        # a typo of a setting whose own name ends in FILE: not that setting with _FILE after it
        ("KETENHUB_KAFKA__SSL_CA_FILE", "(did you mean KETENHUB_KAFKA__SSL_CAFILE?"),
        ("KETENHUB_SMTP__PASWORD_FILE", "(did you mean KETENHUB_SMTP__PASSWORD_FILE?"),
    ],
)
def test_a_misspelt_file_variable_is_hinted_at_what_it_likely_means(
    monkeypatch: pytest.MonkeyPatch, name: str, said: str
) -> None:
    monkeypatch.setenv(name, "/run/secrets/x")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert said in str(err.value), str(err.value)


def test_a_file_variable_inside_a_section_given_as_json_says_it_works_only_as_a_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KETENHUB_DATABASE", '{"password_file": "/run/secrets/pg"}')
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith(
        "KETENHUB_DATABASE__PASSWORD_FILE: a setting is read from a file only as an environment variable"
    )


def test_the_secret_read_from_a_file_is_named_as_its_file_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "secret").write_text(GOOD_SECRET)
    monkeypatch.setenv("KETENHUB_SECRET_FILE", str(tmp_path / "secret"))
    assert load_settings().secret_source == "KETENHUB_SECRET_FILE"
    monkeypatch.delenv("KETENHUB_SECRET_FILE")
    monkeypatch.setenv("KETENHUB_SECRET", GOOD_SECRET)
    assert load_settings().secret_source == "KETENHUB_SECRET"
