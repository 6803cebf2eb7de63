"""All settings in one pydantic-settings model, prefix KETENHUB_, nested sections with `__`."""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
import secrets
import socket
import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Literal, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from hub.config_env import FILE_SUFFIX, CommaListEnv, ValueFileError, unreadable_line
from hub.errors import ConfigError
from hub.handovers.config import HandoverSettings
from hub.notify.config import NotifySettings
from hub.retention.config import RetentionSettings

COMPONENTS = ("intake", "routing", "verwijsindex", "mail", "api")
DEFAULT_DB_URL = "sqlite+aiosqlite:///./ketenhub.db"
_PLACEHOLDERS = {"changeme", "change-me", "secret", "ketenhub", "password", "test", "xxx"}
SECRET_FILE = "ketenhub.secret"  # noqa: S105  (a file name: the embedded default's secret, in the state dir)
MAX_RETRY_DELAY_S = 7 * 24 * 3600  # a rung of a retry ladder waits at most a week


def _check_schedule(schedule: tuple[float, ...]) -> tuple[float, ...]:
    """A retry ladder's delays: each a finite number of seconds above 0 and at most a week. NaN, an
    infinity or 1e12 failed the first parked message (no due time can be made of them); a negative or
    0 delay tries again at once, and a store in trouble would be tried as fast as the scheduler runs."""
    for delay in schedule:
        if not (math.isfinite(delay) and 0 < delay <= MAX_RETRY_DELAY_S):
            raise ValueError(
                f"each delay must be a number of seconds above 0 and at most {MAX_RETRY_DELAY_S}"
                f" (7 days), e.g. 1,5,30,120,600 (got {delay:g})"
            )
    return schedule


# Parked attempts' delays, then the DLQ; none: to the DLQ after the in-place retries.
RetrySchedule = Annotated[tuple[float, ...], AfterValidator(_check_schedule)]


# The mails' sender: an address SMTP carries without SMTPUTF8 (connectors/mail/message.py).
_SENDER = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
# One broker of KETENHUB_KAFKA__BOOTSTRAP_SERVERS, as the Kafka client reads it: a host name (compose's may
# hold underscores; a trailing dot), an IPv4 address, or an IPv6 address (in brackets when a port
# follows, a zone inside them); and a port, 9092 when left out.
_SERVER = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)(?:%[A-Za-z0-9_.-]+)?\]|[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?)"
    r"(?::(?P<port>[0-9]{1,5}))?"
)


def _a_server(entry: str) -> bool:
    """Whether one entry of the bootstrap servers names a broker the Kafka client can reach."""
    with contextlib.suppress(OSError):
        socket.inet_pton(socket.AF_INET6, entry.split("%", 1)[0])
        return True  # a bare IPv6 address: its port is 9092
    found = _SERVER.fullmatch(entry)
    if found is None or not 1 <= int(found["port"] or 9092) <= 65_535:
        return False
    if found["v6"] is not None:
        try:
            socket.inet_pton(socket.AF_INET6, found["v6"])
        except OSError:
            return False
    return True


class KafkaSettings(BaseModel):
    """The broker. No bootstrap servers means: spawn the embedded tansu broker."""

    # a misspelt name in a section given whole as JSON is refused, not ignored
    model_config = ConfigDict(extra="forbid")

    bootstrap_servers: str | None = None  # host:port[,host:port...]; the port defaults to 9092
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # The CA that signed the brokers' certificates (PEM), for SSL and SASL_SSL: Strimzi's cluster CA
    # is its own by default, which the system's trust store does not hold. Unset: the system's.
    ssl_cafile: Path | None = None
    replication_factor: int = Field(default=1, ge=1, le=5)
    client_id: str = "ketenhub"
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    max_batch: int = Field(default=500, ge=1, le=10_000)
    # How long a consumer waits for records before it polls again. faststream's batch subscriber
    # also sleeps this long after a poll that found nothing, so a record that arrives on a quiet
    # topic may wait this much longer before it is read (its default, 200 ms).
    poll_wait_ms: int = Field(default=50, ge=1, le=5_000)
    # After the outbox relay published less than a full batch, it waits this long before it looks
    # again, so the commits of a busy moment go out in one publish and one "sent" write instead of
    # one each. A message that follows another within this time waits at most this much longer;
    # on a quiet hub the relay publishes at once. 0 publishes every commit on its own.
    outbox_gather_ms: int = Field(default=10, ge=0, le=1_000)
    # The largest record batch the brokers take: their message.max.bytes (or the topics'
    # max.message.bytes). The outbox relay parks a row that would be larger, for an operator to
    # release or discard (`ketenhub outbox`), instead of retrying it for ever with nothing behind
    # it going out. Kafka's default; the embedded broker has no limit of its own.
    max_message_bytes: int = Field(default=1_048_588, ge=10_000)
    # How many days a consumer remembers a processed message id (its inbox entry), so that a record
    # delivered again is not processed twice. Unset: the longest retention the hub gives its topics
    # (30 days, the dead letters) and a week; set it higher when topics are kept longer on the
    # brokers. 0 keeps every entry for ever.
    inbox_keep_days: int | None = Field(default=None, ge=0, le=36_500)
    topic_prefix: str = Field(default="", description="prepended to every topic (tests, shared clusters)")
    group_prefix: str = Field(default="ketenhub-", description="prepended to every consumer group")

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, servers: str | None) -> str | None:
        """host[:port] entries, commas between. A port that was no number, or an IPv6 address whose
        bracket was not closed, was accepted, and every command that asked the brokers failed with a
        traceback."""
        if servers is None:
            return None
        entries = [e.strip() for e in servers.split(",")]
        named = [e for e in entries if e]  # a trailing comma names no broker, and the client skips it
        for n, entry in enumerate(entries, start=1):
            if (entry and not _a_server(entry)) or not named:
                where = f"entry {n} of {len(entries)}" if len(entries) > 1 else "it"
                raise _said(
                    f"{where} is no host:port: give host:port, commas between, e.g. "
                    "kafka-0:9092,kafka-1:9092 (an IPv6 address in brackets: [fd00::1]:9092)"
                )
        return servers

    @field_validator("ssl_cafile")
    @classmethod
    def _ca_file(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        """The file is there and holds certificates the TLS library takes, or start-up stops."""
        if path is None:
            return None
        protocol = info.data.get("security_protocol", "PLAINTEXT")
        if not str(protocol).endswith("SSL"):
            raise ValueError(
                f"is for TLS: set KETENHUB_KAFKA__SECURITY_PROTOCOL to SSL or SASL_SSL (not {protocol})"
            )
        if not path.is_file():
            raise ValueError("no such file" if not path.exists() else "not a file")
        try:
            ssl.create_default_context(cafile=str(path))
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
            raise ValueError(f"holds no PEM certificate the TLS library takes ({reason})") from None
        return path


def _said(message: str) -> PydanticCustomError:
    """A refusal in the hub's words that quotes no value: shown as it is, also for a setting read
    from a file (whose other refusals are not, as they may quote the file's content)."""
    return PydanticCustomError("setting", message)


class DatabaseSettings(BaseModel):
    """The store: SQLite file by default, PostgreSQL (asyncpg) in production."""

    # a misspelt name in a section given whole as JSON is refused, not ignored
    model_config = ConfigDict(extra="forbid")

    url: str = DEFAULT_DB_URL
    echo: bool = False
    # PostgreSQL's password apart from the URL: read from a mounted secret
    # (KETENHUB_DATABASE__PASSWORD_FILE), so that the URL itself holds none and may be written in the clear
    password: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _known_driver(cls, url: str) -> str:
        from sqlalchemy.engine import make_url

        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        try:
            parsed = make_url(url)
        except ValueError:  # its message may quote the URL, password and all
            raise ValueError(
                "not a database URL: sqlite+aiosqlite:///path/to/file.db or"
                " postgresql+asyncpg://user:password@host:port/database (a port is a number)"
            ) from None
        if parsed.drivername == "sqlite+aiosqlite" and parsed.database in (None, "", ":memory:"):
            # the hub's components and its commands are apart: a database in one process's memory
            # would be another one in each (and SQLAlchemy gives it a pool the hub's settings break)
            raise ValueError("a SQLite database must be a file: sqlite+aiosqlite:///path/to/file.db")
        if parsed.drivername == "postgresql+asyncpg" and "sslmode" in parsed.query:
            # libpq's name: asyncpg would fail on it at the first connection, with a traceback
            raise ValueError("asyncpg takes ?ssl=require (or verify-ca, verify-full), not libpq's ?sslmode=")
        return url

    @field_validator("password")
    @classmethod
    def _password_for_postgresql(cls, password: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        url = info.data.get("url")
        if password is None or url is None:  # no url: its own error is said
            return password
        from sqlalchemy.engine import make_url

        if not url.startswith("postgresql+asyncpg://"):
            raise _said("only for a postgresql+asyncpg:// URL (KETENHUB_DATABASE__URL)")
        parsed = make_url(url)
        if parsed.password is not None or any(k.lower() == "password" for k in parsed.query):
            raise _said("KETENHUB_DATABASE__URL holds a password too: give it in one place")
        if not password.get_secret_value():
            raise _said("is empty")
        return password

    @model_validator(mode="after")
    def _password_into_url(self) -> DatabaseSettings:
        if self.password is not None:
            from sqlalchemy.engine import make_url

            url = make_url(self.url).set(password=self.password.get_secret_value())
            self.url = url.render_as_string(hide_password=False)
        return self


class HttpSettings(BaseModel):
    """The operator and partner HTTP API."""

    # a misspelt name in a section given whole as JSON is refused, not ignored
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_000_000, ge=1_024)
    # A partner key that authenticated is trusted this long without a new lookup; a key rotated or
    # revoked (`ketenhub partners`, another process) stops working within this time. 0: look up
    # every request.
    key_cache_s: float = Field(default=5.0, ge=0, le=60)
    # How fast one partner key may write (POST, PUT, PATCH, DELETE), counted per hub process: a token
    # bucket of `partner_write_burst` refilled at `partner_writes_per_s`; past it 429 with Retry-After.
    # The defaults are a ceiling far above honest use: the HTTP benchmark's one partner sends about
    # 1,500/s, what one process takes. Set them to a few times the busiest partner's peak. 0: no limit.
    partner_writes_per_s: float = Field(default=5_000.0, ge=0, allow_inf_nan=False)
    partner_write_burst: int = Field(default=10_000, ge=1)
    # How fast one partner key may read (GET, HEAD), from a bucket of its own, the same way. Most
    # partner reads write an audit entry (rule 18): unlimited, one key in a loop would have the hub
    # write as fast as its store takes. The busiest honest reader is the case system, one key for all
    # of Halt's caseworkers: a case opened is a handful of reads, a sweep over every active signal,
    # open handover and consent of Halt Den Haag a few thousand (a year brings some 1,600 prevention
    # interventions and 114 youths referred on to care). The burst takes such a sweep at once; the
    # rate one every five minutes (10/s) beside sixty caseworkers opening a case every ten seconds
    # (30/s). A loop gets 50 reads, 50 audit entries, a second: a process answers audited reads about
    # as fast as it takes HTTP referrals (0.7-1.2x, measured side by side), which the HTTP benchmark
    # puts at 1,500 a second, so a few per cent of that. The write benchmark sends no reads. 0: no limit.
    partner_reads_per_s: float = Field(default=50.0, ge=0, allow_inf_nan=False)
    partner_read_burst: int = Field(default=3_000, ge=1)
    # Whether the operators' session cookie is sent over https only. Unset: yes, unless the hub
    # listens on a loopback address (the default 127.0.0.1: `make run`, tests) and the request came
    # through no proxy (no Forwarded or X-Forwarded-* header), which only a browser on this machine
    # sends, over plain http. Set true behind a proxy on the same machine that adds no such header;
    # false only to try the console over plain http from another machine.
    secure_cookies: bool | None = None


class SmtpSettings(BaseModel):
    """Outgoing mail. No host means: run the embedded SMTP sink."""

    # a misspelt name in a section given whole as JSON is refused, not ignored
    model_config = ConfigDict(extra="forbid")

    host: str | None = None
    port: int = Field(default=25, ge=0, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: Literal["none", "starttls", "implicit"] = "none"
    sender: str = "ketenhub@halt.nl"
    timeout_s: float = Field(default=10.0, gt=0)
    # The wait for the server's answer once a message is sent: a relay may scan it first, and a mail
    # that gets no answer in time may have been delivered (it is dead-lettered, and a replay sends it
    # again). RFC 5321 (4.5.3.2.6) gives the server 10 minutes there.
    answer_timeout_s: float = Field(default=600.0, gt=0)
    # Mails to different caseworkers go out side by side over up to this many connections; each
    # caseworker's mails stay in order (the retry ladder sends one at a time per recipient).
    connections: int = Field(default=4, ge=1, le=20)
    retry_schedule_s: RetrySchedule = (1.0, 5.0, 30.0, 120.0, 600.0)  # parked attempts, then DLQ

    @field_validator("sender")
    @classmethod
    def _an_address_mail_can_carry(cls, sender: str) -> str:
        """An address in ASCII: the hub sends without SMTPUTF8, and a sender outside ASCII (or no
        address at all) started the hub, and then no mail could be built."""
        if _SENDER.fullmatch(sender) is None:
            raise _said(
                "the mails' sender: an address in ASCII, e.g. ketenhub@halt.nl (a domain outside ASCII "
                "in its IDNA form, xn--...)"
            )
        return sender


class VerwijsindexSettings(BaseModel):
    """The Verwijsindex Haaglanden. No URL means: run the simulator in-process."""

    # a misspelt name in a section given whole as JSON is refused, not ignored
    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    timeout_s: float = Field(default=5.0, gt=0)
    poll_interval_s: float = Field(default=2.0, gt=0)
    # as the index's contract takes them (connectors.verwijsindex.contract.Organisatie): a longer one
    # started the hub, and the connector then failed to start with a traceback
    organisatie_code: str = Field(
        default="halt-den-haag", min_length=1, max_length=50, pattern=r"^[a-z0-9][a-z0-9-]*$"
    )
    organisatie_naam: str = Field(default="Halt Den Haag", min_length=1, max_length=200)
    default_end_years: int = Field(default=1, ge=1, le=2, description="rule 12 default: created + N years")
    retry_schedule_s: RetrySchedule = (1.0, 5.0, 30.0, 120.0, 600.0)  # parked attempts, then DLQ
    letter_sender: dict[str, str | list[str]] = Field(default_factory=dict, description="letters.Afzender")

    @field_validator("letter_sender")
    @classmethod
    def _a_letter_sender(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        """The parent letter's sender as the letter takes it (`hub.letters.Afzender`): a key it does
        not know, or a value it refuses, was found only when a caseworker asked for a letter, a 500."""
        from hub.letters import SENDER_DEFAULTS, Afzender

        try:
            Afzender(**(SENDER_DEFAULTS | value))
        except ValidationError as exc:
            keys = ", ".join(Afzender.model_fields)
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(sender)'}: "
                + ("not a key of the letter's sender" if e["type"] == "extra_forbidden" else e["msg"])
                for e in exc.errors()
            )
            raise ValueError(f"{problems} (its keys: {keys})") from None
        return value

    @field_validator("url")
    @classmethod
    def _an_http_url(cls, url: str | None) -> str | None:
        """An http(s) URL with a host. Anything else started the hub, and every call then failed as
        one that may have been carried out: each registration dead-lettered and audited as possibly
        in the index, when none had left."""
        if url is None:
            return None
        try:
            parts = urlsplit(url.strip())
            parts.port  # noqa: B018  (raises ValueError for a port that is no number or out of range)
        except ValueError:
            raise ValueError("not a URL: give the index's base URL, e.g. https://vi.example/api") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host, e.g. https://vi.example/api") from None
        return url.strip()


class Settings(BaseSettings):
    """Everything the hub reads from its environment; built once, passed to create_app."""

    model_config = SettingsConfigDict(env_prefix="KETENHUB_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaSettings = KafkaSettings()
    database: DatabaseSettings = DatabaseSettings()
    http: HttpSettings = HttpSettings()
    smtp: SmtpSettings = SmtpSettings()
    verwijsindex: VerwijsindexSettings = VerwijsindexSettings()
    handovers: HandoverSettings = HandoverSettings()
    notify: NotifySettings = NotifySettings()  # borging after N days (rule 17), mail sink size
    retention: RetentionSettings = RetentionSettings()  # how long personal data is kept
    secret: SecretStr | None = Field(default=None, description="HMAC secret for the pseudonymous youth key")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False
    components: list[str] = Field(default_factory=lambda: list(COMPONENTS))
    state_dir: Path = Path(".")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment read by `CommaListEnv`: lists also comma-separated."""
        return init_settings, CommaListEnv(settings_cls), dotenv_settings, file_secret_settings

    @property
    def embedded_broker(self) -> bool:
        """True when the hub spawns its own tansu broker."""
        return self.kafka.bootstrap_servers is None

    @model_validator(mode="after")
    def _check(self) -> Settings:
        unknown = set(self.components) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"components: unknown {sorted(unknown)}; allowed {list(COMPONENTS)}")
        try:  # HandoverSettings is the routing's own: its ladder is checked as the others are
            _check_schedule(self.handovers.retry_schedule_s)
        except ValueError as exc:
            raise ValueError(f"handovers.retry_schedule_s: {exc}") from None
        if self.secret is not None:
            value = self.secret.get_secret_value()
            if value.lower() in _PLACEHOLDERS or len(value) < 32:
                raise ValueError(
                    "secret: KETENHUB_SECRET must be at least 32 characters and not a placeholder"
                )
        elif not self.embedded_broker:
            raise ValueError(
                "secret: KETENHUB_SECRET is required when KETENHUB_KAFKA__BOOTSTRAP_SERVERS is set "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return self

    @property
    def secret_file(self) -> Path:
        """Where the embedded default keeps its secret (KETENHUB_STATE_DIR/ketenhub.secret)."""
        return (self.state_dir / SECRET_FILE).absolute()

    @property
    def secret_source(self) -> str:
        """Where the secret comes from, for a message: the variable, or the file."""
        if self.secret is None:
            return f"KETENHUB_STATE_DIR ({self.secret_file})"
        from_file = any(n.upper() == f"KETENHUB_SECRET{FILE_SUFFIX}" for n in os.environ)
        return f"KETENHUB_SECRET{FILE_SUFFIX}" if from_file else "KETENHUB_SECRET"

    def secret_value(self) -> str:
        """The pseudonymisation secret: KETENHUB_SECRET, else the one `ketenhub run` keeps in its state
        dir. ConfigError when there is neither: a secret made up here would key nothing the hub holds."""
        if self.secret is not None:
            return self.secret.get_secret_value()
        path = self.secret_file
        try:
            value = path.read_text().strip()
        except FileNotFoundError:
            raise ConfigError(
                f"KETENHUB_SECRET: not set, and there is no {path}: set KETENHUB_SECRET to the hub's"
                f" secret, or KETENHUB_STATE_DIR to the directory `ketenhub run` keeps its {SECRET_FILE} in"
            ) from None
        except OSError as exc:
            raise ConfigError(f"KETENHUB_STATE_DIR: cannot read {path}: {exc.strerror or exc}") from None
        if len(value) < 32:
            raise ConfigError(f"KETENHUB_STATE_DIR: {path} holds no secret (empty or cut short)")
        return value

    def ensure_secret(self) -> str:
        """The secret, for `ketenhub run`: on the embedded default the first start makes a random one
        in the state dir (mode 600), whole or not at all. No other command makes one."""
        if self.secret is None and not self.secret_file.exists():
            if not self.state_dir.is_dir():
                raise ConfigError(
                    f"KETENHUB_STATE_DIR: {self.state_dir.absolute()} is not a directory (the hub keeps"
                    f" its {SECRET_FILE} there)"
                )
            _make_secret_file(self.secret_file)
        return self.secret_value()


def _make_secret_file(path: Path) -> None:
    """A random secret at `path`, unless one is there: written and on disk under another name first,
    then linked into place, so that a second hub starting at the same moment reads it whole."""
    partial = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another hub made it first: theirs it is
            os.link(partial, path)
    except OSError as exc:
        raise ConfigError(f"KETENHUB_STATE_DIR: cannot make {path}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)


def _env_name(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return "KETENHUB_" + "__".join(p.upper() for p in parts) if parts else "KETENHUB_*"


# Variables under the prefix that are no setting of the hub: compose's own (deploy/.env: the image's
# tag, the API's host address) and the tests' and benchmarks'.
NOT_SETTINGS = frozenset(
    {
        *("KETENHUB_VERSION", "KETENHUB_API_BIND"),
        *("KETENHUB_CHAOS_LONG", "KETENHUB_FUZZ_EXAMPLES", "KETENHUB_TEST_PG", "KETENHUB_BENCH_LOOP"),
    }
)


def _settings_of(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, object]]:
    """(variable, annotation) of every setting of `model` and of its sections, under `prefix`."""
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        yield variable, field.annotation
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _settings_of(field.annotation, f"{variable}__")


def setting_names() -> frozenset[str]:
    """Every environment variable the hub reads a setting from: KETENHUB_<SETTING>, and
    KETENHUB_<SECTION>__<SETTING> for a section's (a section may also be given whole, as JSON)."""
    return frozenset(variable for variable, _ in _settings_of(Settings, "KETENHUB_"))


# What Kubernetes puts in every pod for each Service of its namespace (service links): the Service
# ketenhub-api gives KETENHUB_API_SERVICE_HOST, KETENHUB_API_PORT, KETENHUB_API_PORT_8000_TCP_ADDR, ...
# Never with the double underscore of a section's setting.
_SERVICE_LINK = re.compile(
    r"KETENHUB_(?!.*__)\w+?_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?)"
)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """The KETENHUB_* variables of `environ` that are no setting: a misspelt one ("KETENHUB_SMTP__TSL")
    was ignored, and the hub ran on the default it was meant to replace. A variable below a setting
    that holds a mapping (`KETENHUB_VERWIJSINDEX__LETTER_SENDER__...`) is that setting's; those
    Kubernetes sets for a Service named ketenhub-* are let through."""
    known = setting_names()
    mappings = tuple(
        f"{variable}__"
        for variable, annotation in _settings_of(Settings, "KETENHUB_")
        if get_origin(annotation) is dict or annotation is dict
    )
    return sorted(
        name
        for name in (n.upper() for n in environ)
        if name.startswith("KETENHUB_")
        and name not in known
        and name.removesuffix(FILE_SUFFIX) not in known  # the setting read from a file
        and name not in NOT_SETTINGS
        and not name.startswith(mappings)
        and not _SERVICE_LINK.fullmatch(name)
    )


def _unknown_line(name: str) -> str:
    """One line for a variable (or a name in a section given as JSON) that is no setting, with the
    setting it is likely meant for."""
    base = name.removesuffix(FILE_SUFFIX)
    if base != name and base in setting_names():  # only in a section given as JSON: no variable there
        return (
            f"{name}: a setting is read from a file only as an environment variable of its own"
            f" ({name}=/path/to/file), not inside a section given as JSON"
        )
    near = _flat(name)  # KETENHUB_KAFKA__SSL_CA_FILE: KETENHUB_KAFKA__SSL_CAFILE, not ..._CAFILE_FILE
    if near is None and base != name and (meant := _near(base)) is not None:
        near = f"{meant}{FILE_SUFFIX}"  # a misspelt KETENHUB_<SETTING>_FILE
    near = near or _near(name)
    hint = f"did you mean {near}? " if near else ""
    return f"{name}: no setting of the hub ({hint}{_LISTED})"


def _flat(name: str) -> str | None:
    """The setting that differs from `name` in its underscores alone ("KETENHUB_KAFKA_BOOTSTRAP_SERVERS")."""
    return {n.replace("_", ""): n for n in setting_names()}.get(name.replace("_", ""))


def _near(name: str) -> str | None:
    # one differing in its underscores alone, or a name of the same section ("KETENHUB_SMTP__TSL":
    # KETENHUB_SMTP__TLS); not one of another section that looks alike
    section = name.partition("__")[0] + "__" if "__" in name else None
    names = sorted(setting_names())
    same = [n for n in names if section is not None and n.startswith(section)]
    close = difflib.get_close_matches(name, same or names, n=1, cutoff=0.8 if same else 0.9)
    return _flat(name) or (close[0] if close else None)


_LISTED = "the README's Configuration lists them; correct its name or unset it"


def load_settings(**overrides: object) -> Settings:
    """Build Settings from the environment; a bad setting raises ConfigError with one clear line, as
    does a KETENHUB_* variable that is no setting."""
    if unknown := unknown_variables(os.environ):
        raise ConfigError(_unknown_line(unknown[0]))
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValueFileError as exc:  # a KETENHUB_<SETTING>_FILE that cannot be read
        raise ConfigError(str(exc)) from None
    except SettingsError as exc:  # not JSON where JSON (or a comma-separated list) is wanted
        path, why = unreadable_line(exc)
        raise ConfigError(f"{_env_name(path)}: {why}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        msg = str(first["msg"]).removeprefix("Value error, ")
        loc = first["loc"]
        if not loc and ":" in msg:  # model-level check: the message starts with the field name
            field, _, msg = msg.partition(":")
            loc = tuple(field.split("."))
        if first["type"] == "extra_forbidden":  # a name in a section given as JSON: its value may be
            # a password under a misspelt name, so it is not shown
            raise ConfigError(_unknown_line(_env_name(loc))) from None  # as a variable's, with its hint
        given = first.get("input")
        name = _env_name(loc)
        # a value read from a file is never shown: the file may be another setting's secret
        read_from = [f for f in _file_variables() if name == f or name.startswith(f"{f}__")]
        shown = (
            f" (got {given!r})"
            if isinstance(given, str | int | float)
            and not any(w in str(loc) for w in ("secret", "password", "url"))
            and not read_from
            else ""
        )
        said = f"{name}{FILE_SUFFIX}" if name in read_from else name
        if read_from and first["type"] in ("value_error", "assertion_error"):  # the hub's own words,
            # which may quote the value ("unknown ['...']", "(got 5)"); pydantic's own never do
            msg = "its file does not hold a valid value (not shown: a file may hold another setting's secret)"
        raise ConfigError(f"{said}: {msg.strip()}{shown}") from None


def _file_variables() -> list[str]:
    """The settings (or sections) the environment gives as KETENHUB_<SETTING>_FILE."""
    names = [n.upper() for n in os.environ if n.upper().startswith("KETENHUB_")]
    return [n.removesuffix(FILE_SUFFIX) for n in names if n.endswith(FILE_SUFFIX)]
