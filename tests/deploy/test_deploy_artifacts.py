"""deploy/ checked with real validators: Compose spec, Kubernetes schemas, promtool, Grafana JSON.

No container engine runs here, so nothing is started; what can be proven without one is proven:
the files are what their tools accept, and they use only the settings and metrics the hub has.
Validators (pip): check-jsonschema (ships the Compose spec schema), kubernetes-validate (ships the
Kubernetes schemas), dockerfile (BuildKit's own Dockerfile parser), PyYAML. Binaries: promtool
(Debian: `apt-get install -y prometheus`) and kubectl (for `kubectl kustomize`); tests that need a
missing one skip and say which.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.compose import with_secret_files
from tests.helpers.k8s import container_environment, with_mounted_secrets

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read deploy/ (pip install pyyaml)")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "ketenhub.json"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to run on

# The contract with the hub's Settings (pydantic-settings, prefix KETENHUB_, nested with __): deploy/
# may set only variables the hub reads (`hub.config.setting_names`; the hub refuses any other
# KETENHUB_* at start), and deploy/README.md documents each it sets. These it must set (or name a
# file of, KETENHUB_<SETTING>_FILE).
REQUIRED_SETTINGS = frozenset(
    {"KETENHUB_KAFKA__BOOTSTRAP_SERVERS", "KETENHUB_DATABASE__URL", "KETENHUB_SECRET"}
)

# The hub's metrics (DESIGN.md, "Operators"); histograms also expose _bucket, _sum and _count.
CONTRACT_METRICS = frozenset(
    {
        "kafka_consumergroup_lag",
        "kafka_consumergroup_lag_seconds",
        "ketenhub_consumergroup_expired_unread",
        "ketenhub_consumergroup_expired_unread_records_total",
        "kafka_topic_partition_current_offset",
        "ketenhub_messages_total",
        "ketenhub_delivery_attempts_total",
        "ketenhub_retry_parked",
        "ketenhub_dlq_messages",
        "ketenhub_ready",
        "ketenhub_delivery_hook_failures_total",  # the hub's own additions (README, "Operators")
        "ketenhub_delivery_postponed_total",
        "ketenhub_outbox_waiting",
        "ketenhub_outbox_oldest_seconds",
        "ketenhub_outbox_parked",
        "ketenhub_lag_probe_up",
    }
)
CONTRACT_HISTOGRAMS = frozenset({"ketenhub_handler_seconds"})

# Every topic of hub/topics.py, as the contract names them.
CONTRACT_TOPICS = frozenset(
    {
        "partner.politie.referral.v1",
        "partner.politie.decision.v1",
        "referral.received.v1",
        "referral.decided.v1",
        "handover.requested.v1",
        "handover.status.v1",
        "handover.answers.jongerenwerk.v1",
        "handover.answers.wijkteam.v1",
        "handover.answers.jeugdhulp.v1",
        "handover.answers.verslavingszorg.v1",
        "handover.answers.jeugdhulp.dlq.v1",
        "verwijsindex.signal.v1",
        "verwijsindex.signal.retry.v1",
        "verwijsindex.signal.dlq.v1",
        "verwijsindex.match.v1",
        "notification.mail.v1",
        "notification.mail.retry.v1",
        "notification.mail.dlq.v1",
        "partner.politie.referral.dlq.v1",
    }
)
HUB_COMPONENTS = ("intake", "routing", "verwijsindex", "mail", "api")
CONSUMER_COMPONENTS = ("intake", "routing", "verwijsindex", "mail")


# --- helpers -------------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return compose


def _k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _k8s_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all_k8s_docs() -> list[dict[str, Any]]:
    return [doc for path in _k8s_files() for doc in _k8s_docs(path)]


def _skip_unless_ci(why: str) -> None:
    """Skip (visibly) for a tool that is not installed; on CI `.ci/prepare` installs it, so fail there:
    a green run must have checked what the tool checks."""
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI installs it in .ci/prepare)")
    pytest.skip(why)


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        _skip_unless_ci("promtool not installed: apt-get update && apt-get install -y prometheus")
    assert found is not None
    return found


def _run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


_PROMQL_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"})


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, labels and keywords left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals, with their $variables
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery durations
    expr = re.sub(r"\$\w+", "", expr)  # Grafana variables outside strings
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", expr):
        if match.group(2) is None and match.group(1) not in _PROMQL_KEYWORDS:
            names.add(match.group(1))
    return names


def _allowed_metric(name: str) -> bool:
    if name in CONTRACT_METRICS:
        return True
    base, _, suffix = name.rpartition("_")
    return base in CONTRACT_HISTOGRAMS and suffix in {"bucket", "sum", "count"}


def _dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def _kafka_script(name: str) -> str:
    return str(_compose()["configs"][name]["content"])


# --- (a) Compose ---------------------------------------------------------------------------------


def _compose_schema_errors(document: dict[str, Any]) -> list[str]:
    jsonschema = pytest.importorskip("jsonschema", reason="pip install check-jsonschema")
    pytest.importorskip("check_jsonschema", reason="pip install check-jsonschema (ships the Compose schema)")
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


def test_compose_file_follows_the_compose_specification() -> None:
    assert _compose_schema_errors(_compose()) == []


def test_compose_schema_check_catches_a_misplaced_key() -> None:
    """The check above is not vacuous: a typo an operator could make is reported."""
    broken = _compose()
    broken["services"]["mail"]["replicas"] = 3  # belongs under deploy:
    errors = _compose_schema_errors(broken)
    assert any(e.startswith("services/mail") for e in errors), errors


def test_compose_secrets_are_read_from_mounted_files_never_from_the_environment() -> None:
    """No container's environment (`docker inspect`) holds a secret: each is a file under
    /run/secrets/ of a secret the service mounts; a database URL holds no password. A read-only
    container's secrets are files of deploy/secrets/: compose cannot put one given as a variable (or
    as content) into it, and refuses to create the container."""
    compose = _compose()
    secretish = re.compile(r"PASSWORD|SECRET")
    for name, service in compose["services"].items():
        mounted = {s if isinstance(s, str) else s["source"] for s in service.get("secrets") or []}
        for key, value in (service.get("environment") or {}).items():
            if key.endswith("DATABASE__URL"):
                assert "@" not in str(value) or ":" not in str(value).split("://", 1)[1].split("@")[0], (
                    f"{name}: {key} holds a password; give it as KETENHUB_DATABASE__PASSWORD_FILE"
                )
            if not secretish.search(key):
                continue
            assert key.endswith("_FILE"), f"{name}: {key} is a secret in the environment; read it from a file"
            path = str(value)
            assert path.startswith("/run/secrets/"), f"{name}: {key}={value}"
            secret = path.removeprefix("/run/secrets/")
            assert secret in mounted, f"{name}: {key} reads {path}, but the service does not mount {secret}"
            assert secret in compose["secrets"], f"{name}: {key} reads a secret compose does not define"
        if service.get("read_only"):
            for secret in sorted(mounted):
                source = compose["secrets"][secret]
                assert set(source) == {"file"}, f"{name} is read-only: its secret {secret} must be a file"
                assert source["file"] == f"./secrets/{secret}", (name, secret, source)
    for name, secret in compose["secrets"].items():
        assert set(secret) in ({"environment"}, {"file"}), f"secret {name}: a variable or a file"


def test_compose_hub_services_read_their_secrets_as_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each hub service's environment, with its mounted secrets as files, gives the settings it needs:
    the database URL with the password, the pseudonymisation secret, its own Kafka password."""
    from hub.config import load_settings

    def value_of(secret: str) -> str:
        return f"value-of-{secret}-long-enough-for-a-secret-0123456789"

    for service in (*HUB_COMPONENTS, "migrate"):
        env = with_secret_files(_compose_environment(service), tmp_path / service, value_of)
        for key in [k for k in os.environ if k.startswith("KETENHUB_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = load_settings()
        assert settings.secret is not None
        assert settings.secret.get_secret_value() == value_of("ketenhub-secret"), service
        assert settings.database.url.startswith("postgresql+asyncpg://ketenhub:value-of-postgres-password")
        if service != "migrate":
            assert settings.kafka.sasl_password is not None
            own = value_of(f"kafka-ketenhub-{service}-password")
            assert settings.kafka.sasl_password.get_secret_value() == own, service


def test_compose_required_variables_are_documented() -> None:
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    required |= {s["environment"] for s in _compose()["secrets"].values() if "environment" in s}
    files = {s["file"].removeprefix("./secrets/") for s in _compose()["secrets"].values() if "file" in s}
    readme = (DEPLOY / "README.md").read_text()
    missing = sorted(v for v in required | files if v not in readme)
    assert missing == [], f"deploy/README.md does not explain {missing}"


def test_compose_runs_a_three_node_kraft_cluster_with_rf3_and_min_isr2() -> None:
    compose = _compose()
    brokers = sorted(n for n in compose["services"] if re.fullmatch(r"kafka-\d", n))
    assert brokers == ["kafka-1", "kafka-2", "kafka-3"]
    for name in brokers:
        assert compose["services"][name]["image"].startswith("apache/kafka:")
    start = _kafka_script("kafka-start")
    props = dict(line.split("=", 1) for line in start.splitlines() if re.match(r"^[a-z][a-z0-9.-]*=", line))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"].count("@") == 3
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["auto.create.topics.enable"] == "false"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert "PLAINTEXT" not in props["listener.security.protocol.map"].replace("SASL_PLAINTEXT", "")
    for listener in ("broker", "client", "external"):
        assert props[f"listener.name.{listener}.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"


def test_kafka_init_creates_every_hub_topic_with_rf3() -> None:
    script = _kafka_script("kafka-init")
    topic_name = r"\b((?:partner|referral|handover|verwijsindex|notification)\.[a-z.]+\.v\d+)\b"
    created = set(re.findall(topic_name, script))
    assert created >= CONTRACT_TOPICS
    assert re.search(r"kafka-topics --create --if-not-exists .*--replication-factor 3", script)
    assert "min.insync.replicas=2" in script
    from hub.topics import all_topics  # the single source of topic names

    assert {t.name for t in all_topics()} <= created, "kafka-init misses topics declared in hub/topics.py"


def test_kafka_init_gives_each_principal_a_scram_user_and_partners_only_their_own_topics() -> None:
    script = _kafka_script("kafka-init")
    assert re.search(r'hub_components="intake routing verwijsindex mail api"', script)
    assert "SCRAM-SHA-512=[iterations=8192" in script
    grants = re.findall(r'^partner_acls (\w+) "([^"]*)" "([^"]*)"$', script, flags=re.MULTILINE)
    assert grants, "no partner ACLs"
    for partner, writes, reads in grants:
        for topic in f"{writes} {reads}".split():
            assert topic.startswith(f"partner.{partner}."), f"{partner} may touch {topic}"
    partner_function = script[script.index("partner_acls() {") :]
    partner_function = partner_function[: partner_function.index("\n}")]
    assert "--topic" in partner_function
    assert re.search(r"prefixed --topic", partner_function) is None, "partners get literal topic ACLs only"
    secrets = set(_compose()["services"]["kafka-init"]["secrets"])
    for component in HUB_COMPONENTS:
        assert f"kafka-ketenhub-{component}-password" in secrets
    for partner, _, _ in grants:
        assert f"kafka-partner-{partner}-password" in secrets


def test_compose_runs_each_component_as_its_own_service_after_migration() -> None:
    services = _compose()["services"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    passwords = set()
    for component in HUB_COMPONENTS:
        service = services[component]
        assert service["command"] == ["run", "--components", component]
        env = service["environment"]
        assert env["KETENHUB_KAFKA__SASL_USERNAME"] == f"ketenhub-{component}"
        passwords.add(env["KETENHUB_KAFKA__SASL_PASSWORD_FILE"])
        assert env["KETENHUB_KAFKA__REPLICATION_FACTOR"] == "3"
        assert env["KETENHUB_DATABASE__URL"].startswith("postgresql+asyncpg://")
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
        assert service["read_only"] is True
    assert len(passwords) == len(HUB_COMPONENTS), "each component has its own Kafka credential"
    for component in CONSUMER_COMPONENTS:
        assert services[component]["deploy"]["replicas"] >= 2


def test_kafka_init_lets_each_receiver_type_read_its_handovers_and_write_only_its_answers() -> None:
    """The hub takes an answer as the organisation reading that type's handovers because only that
    principal may write the type's answers topic: a receiver writing anything else could answer in
    another's name."""
    from hub.topics import HANDOVER_RECEIVERS

    script = _kafka_script("kafka-init")
    (listed,) = re.findall(r'^receivers="([^"]*)"$', script, flags=re.MULTILINE)
    assert listed.split() == list(HANDOVER_RECEIVERS)
    assert 'for r in $$receivers; do scram_user "receiver-$$r"; done' in script
    assert 'for r in $$receivers; do receiver_acls "$$r"; done' in script
    function = script[script.index("receiver_acls() {") :]
    function = function[: function.index("\n}")]
    grants = re.findall(r'^\s*allow "receiver-\$\$1" (.*)$', function, flags=re.MULTILINE)
    topics = sorted(g for g in grants if "--topic" in g)
    assert topics == [
        '--topic "handover.answers.$$1.v1" --operation Write --operation Describe',
        '--topic "handover.outbound.$$1.v1" --operation Read --operation Describe',
    ]
    groups = [g for g in grants if "--group" in g]
    assert groups == [
        '--resource-pattern-type prefixed --group "receiver-$$1" --operation Read --operation Describe'
    ]
    assert len(grants) == 3
    # nobody outside the hub's own principals may write the retired shared answers topic
    assert not [line for line in script.splitlines() if "allow" in line and "handover.status" in line]
    secrets = set(_compose()["services"]["kafka-init"]["secrets"])
    for receiver in HANDOVER_RECEIVERS:
        assert f"kafka-receiver-{receiver}-password" in secrets


# --- (a2) Kafka ACLs against what each component's process does -----------------------------------
# The brokers refuse whatever no ACL allows (allow.everyone.if.no.acl.found=false), and tansu, which the
# other tests run on, checks no ACL at all: a consumer group or topic a component starts to use without
# a grant in kafka-init works in every test and stops that component in production. So each hub
# service is started as compose starts it, up to the moment its consumers would join their groups, and
# what it would do there is held against the ACLs kafka-init adds.

# Kafka's implied operations: Read, Write, Delete or Alter on a resource allow Describe on it, and
# AlterConfigs allows DescribeConfigs (org.apache.kafka.common.acl.AclOperation, AclAuthorizer).
_IMPLIED_BY = {"Describe": {"Read", "Write", "Delete", "Alter"}, "DescribeConfigs": {"AlterConfigs"}}


@dataclass(frozen=True)
class Grant:
    """One allow-ACL that kafka-init adds."""

    principal: str
    resource: str  # topic, group, cluster, transactional-id
    name: str
    prefixed: bool
    operations: frozenset[str]

    def allows(self, principal: str, resource: str, name: str, operation: str) -> bool:
        if (principal, resource) != (self.principal, self.resource):
            return False
        if not (name.startswith(self.name) if self.prefixed else self.name in {name, "*"}):
            return False
        ops = self.operations
        return "All" in ops or operation in ops or bool(ops & _IMPLIED_BY.get(operation, set()))


def _acl_grants(args: list[str]) -> list[Grant]:
    """The grants of one `kafka-acls.sh` call (none for --list); an option not understood here fails,
    so that a deny rule or another resource type gets taught to this check instead of passing it."""
    if "--add" not in args:
        return []
    principals: list[str] = []
    resources: list[tuple[str, str]] = []
    operations: set[str] = set()
    prefixed = False
    words = iter(args)
    for word in words:
        if word in {"--add", "--list"}:
            continue
        if word == "--cluster":
            resources.append(("cluster", "kafka-cluster"))
            continue
        value = next(words)
        if word in {"--bootstrap-server", "--command-config"}:
            continue
        if word == "--allow-principal":
            principals.append(value.removeprefix("User:"))
        elif word == "--operation":
            operations.add(value)
        elif word == "--resource-pattern-type":
            assert value in {"literal", "prefixed"}, f"kafka-init: pattern type {value} not checked here"
            prefixed = value == "prefixed"
        elif word in {"--topic", "--group", "--transactional-id"}:
            resources.append((word[2:], value))
        else:
            raise AssertionError(f"kafka-init: kafka-acls option {word} is not understood by this check")
    assert principals and resources and operations, f"kafka-init: incomplete ACL {args}"
    return [
        Grant(p, kind, name, prefixed, frozenset(operations)) for p in principals for kind, name in resources
    ]


def _kafka_init_grants(tmp_path: Path) -> list[Grant]:
    """Every ACL kafka-init adds: its script run by bash as compose hands it over, with Kafka's tools
    replaced by a recorder of their arguments (loops, functions and variables are bash's to read)."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is needed to read kafka-init's ACLs")
    secrets, tools, calls = tmp_path / "secrets", tmp_path / "bin", tmp_path / "calls"
    secrets.mkdir()
    tools.mkdir()
    for name in _compose()["services"]["kafka-init"]["secrets"]:
        (secrets / name).write_text("not-a-real-password")
    for tool in ("kafka-configs", "kafka-topics", "kafka-acls"):
        fake = tools / f"{tool}.sh"
        fake.write_text(f"#!/bin/sh\nprintf '%s\\0' {tool} \"$@\" >> '{calls}'\nprintf '\\n' >> '{calls}'\n")
        fake.chmod(0o755)
    script = tmp_path / "kafka-init.sh"
    script.write_text(
        _kafka_script("kafka-init")
        .replace("$$", "$")  # compose turns $$ into $
        .replace("/run/secrets/", f"{secrets}/")
        .replace("/opt/kafka/bin/", f"{tools}/")
        .replace("/tmp/admin.properties", str(tmp_path / "admin.properties"))  # noqa: S108 (the script's path, moved)
    )
    result = _run(bash, str(script))
    assert result.returncode == 0, result.stdout + result.stderr
    grants: list[Grant] = []
    for record in calls.read_text().split("\0\n"):
        tool, *args = record.split("\0") if record else [""]
        if tool == "kafka-acls":
            grants += _acl_grants(args)
    return grants


@dataclass
class Process:
    """What one hub service does on Kafka, as its process is wired (Hub.start) from compose's settings."""

    service: str
    principal: str
    groups: set[str] = field(default_factory=set)  # joins (and commits in): Read
    reads: set[str] = field(default_factory=set)  # its consumers' topics
    dead_letters: set[str] = field(default_factory=set)  # its consumers' DLQs
    hub_topics: set[str] = field(default_factory=set)  # what Hub.start makes sure exists


class _Wired(Exception):
    """Raised where Hub.start would start the consumers: the process is wired, nothing is connected."""


def _compose_environment(service: str) -> dict[str, str]:
    """The KETENHUB_* environment compose gives a hub service, with made-up values for deploy/.env."""
    env = _compose()["services"][service]["environment"]

    def value(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if default is not None and default.startswith(":-"):
            return default[2:]
        if name == "VERWIJSINDEX_URL":
            return "http://verwijsindex-sim:8081"  # as deploy/.env sets it with --profile demo
        return "compose-test-secret-that-is-long-enough-0123456789" if name == "KETENHUB_SECRET" else "x"

    return {k: re.sub(r"\$\{(\w+)(:[-?][^}]*)?\}", value, str(v)) for k, v in env.items()}


async def _wire(service: str, database_url: str, secrets: Path, monkeypatch: pytest.MonkeyPatch) -> Process:
    """Run Hub.start for a compose service up to its consumers joining: registrars, subscribers, relay.

    Only the edges that need a cluster are replaced: creating topics (recorded instead), the producer,
    and starting the consumers (where the wiring is taken). The store is a local SQLite file.
    """
    from hub import runtime
    from hub.app import REGISTRARS
    from hub.config import load_settings

    command = _compose()["services"][service]["command"]
    assert command[:2] == ["run", "--components"], command
    env = with_secret_files(
        _compose_environment(service),
        secrets,
        lambda s: "compose-test-secret-that-is-long-enough-0123456789" if s == "ketenhub-secret" else "x",
    )
    for key in [k for k in os.environ if k.startswith("KETENHUB_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("KETENHUB_DATABASE__URL", database_url)
    monkeypatch.delenv("KETENHUB_DATABASE__PASSWORD_FILE")  # the SQLite file above takes none
    settings = load_settings(components=command[2].split(","))
    assert settings.kafka.sasl_username is not None
    process = Process(service, settings.kafka.sasl_username)

    async def ensure_topics(options: Any, topics: Any, *, replication_factor: int) -> list[str]:
        process.hub_topics |= {t.name for t in topics}
        return []

    class Producer:
        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            pass

    async def start_broker(broker: Any) -> None:
        for sub in broker.subscribers:
            assert sub.pattern is None and not sub.partitions, "teach this check patterns/partitions"
            process.groups.add(sub.group_id)
            process.reads |= set(sub.topic_names)
        raise _Wired

    monkeypatch.setattr(runtime, "ensure_topics", ensure_topics)
    monkeypatch.setattr(runtime, "make_producer", lambda options: Producer())
    monkeypatch.setattr(runtime, "_start_broker", start_broker)
    hub = runtime.Hub(settings, registrars=REGISTRARS)
    try:
        with pytest.raises(_Wired):
            await hub.start()
        assert hub.spine is not None
        process.dead_letters = {sub.dlq for sub in hub.spine.subscriptions}
        assert {sub.group for sub in hub.spine.subscriptions} <= process.groups
    finally:
        await hub.stop()
    return process


@pytest.fixture(scope="module")
async def hub_processes(tmp_path_factory: pytest.TempPathFactory) -> list[Process]:
    database = tmp_path_factory.mktemp("acl") / "wiring.db"
    processes = []
    for service in HUB_COMPONENTS:
        with pytest.MonkeyPatch.context() as monkeypatch:
            secrets = database.parent / f"secrets-{service}"
            processes.append(await _wire(service, f"sqlite+aiosqlite:///{database}", secrets, monkeypatch))
    return processes


def _missing_grants(processes: list[Process], grants: list[Grant]) -> list[str]:
    """What a process does that no ACL allows its principal, one line each."""
    every_group = set().union(*(p.groups for p in processes))
    missing = []

    def need(p: Process, resource: str, name: str, operations: tuple[str, ...], why: str) -> None:
        for op in operations:
            if not any(g.allows(p.principal, resource, name, op) for g in grants):
                missing.append(f"{p.service}: {p.principal} may not {op} {resource} {name} ({why})")

    for p in processes:
        for group in sorted(p.groups):
            need(p, "group", group, ("Read", "Describe"), "its consumers join it and commit in it")
        for group in sorted(every_group):  # the lag on /metrics, which every process serves
            need(p, "group", group, ("Describe",), "lag on /metrics")
        for topic in sorted(p.reads):
            need(p, "topic", topic, ("Read", "Describe"), "its consumers read it")
        for topic in sorted(p.dead_letters):
            need(p, "topic", topic, ("Write",), "its consumers dead-letter there")
        for topic in sorted(p.hub_topics):
            need(p, "topic", topic, ("Create", "Describe"), "created at start when missing")
            # The outbox is shared: every process's relay publishes whatever any component emitted.
            need(p, "topic", topic, ("Write",), "the outbox relay")
            need(p, "topic", topic, ("Read",), "record ages for the lag, dead letters on the console")
    return missing


def test_kafka_init_grants_each_component_what_its_process_does(
    hub_processes: list[Process], tmp_path: Path
) -> None:
    """Each hub service, wired as compose starts it, may join every consumer group it joins and read,
    write and create every topic it does; a new group or topic without its grant fails here."""
    by_service = {p.service: p for p in hub_processes}
    assert {p.principal for p in hub_processes} == {f"ketenhub-{c}" for c in HUB_COMPONENTS}
    assert by_service["intake"].groups and by_service["api"].hub_topics  # the wiring was taken
    grants = _kafka_init_grants(tmp_path)
    missing = _missing_grants(hub_processes, grants)
    assert missing == [], "kafka-init in deploy/compose.yaml lacks grants:\n" + "\n".join(missing)
    # deploy/README.md: a component principal cannot join another component's consumer group.
    for p in hub_processes:
        others = set().union(*(o.groups for o in hub_processes if o is not p)) - p.groups
        joinable = sorted(g for g in others if any(a.allows(p.principal, "group", g, "Read") for a in grants))
        assert joinable == [], f"{p.principal} may join another component's groups"
    # Kubernetes runs each component under the principal compose gives it, so these grants hold there.
    for doc in _all_k8s_docs():
        if doc["kind"] == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            env = {e["name"]: e.get("value") for e in container["env"]}
            principal = by_service[container["args"][2]].principal
            assert env["KETENHUB_KAFKA__SASL_USERNAME"] == principal, doc["metadata"]["name"]


def test_acl_check_catches_a_group_joined_without_a_grant(
    hub_processes: list[Process], tmp_path: Path
) -> None:
    """The check above is not vacuous: a consumer group that no grant names is reported."""
    routing = next(p for p in hub_processes if p.service == "routing")
    joined = Process(routing.service, routing.principal, groups={*routing.groups, "ketenhub-something-new"})
    missing = _missing_grants([joined], _kafka_init_grants(tmp_path))
    assert [m for m in missing if "ketenhub-something-new" in m] == [
        "routing: ketenhub-routing may not Read group ketenhub-something-new (its consumers join it and "
        "commit in it)"
    ]


@pytest.mark.parametrize("name", ["kafka-start", "kafka-init"])
def test_kafka_scripts_are_sound_shell(name: str, tmp_path: Path) -> None:
    """The scripts compose hands the Kafka containers: bash syntax, and shellcheck where installed."""
    script = tmp_path / f"{name}.sh"
    script.write_text(_kafka_script(name).replace("$$", "$"))  # compose turns $$ into $
    result = _run("bash", "-n", str(script))
    assert result.returncode == 0, result.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        _skip_unless_ci("shellcheck not installed (apt-get install -y shellcheck); bash -n passed")
    result = _run(shellcheck, "--shell=bash", str(script))
    assert result.returncode == 0, result.stdout


# --- (b) Kubernetes ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _k8s_files(), ids=lambda p: p.name)
def test_k8s_manifest_validates_against_the_kubernetes_schema(path: Path) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    docs = _k8s_docs(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        try:
            kv.validate(doc, K8S_VERSION, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{path.name} {doc['kind']}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            pytest.fail(f"{path.name}: {exc.message}")


def test_k8s_strict_validation_catches_a_misspelt_probe() -> None:
    """The check above is not vacuous: a misspelt field (silently ignored by kubectl) fails."""
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    deployment = next(d for d in _k8s_docs(K8S / "mail.yaml") if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in _k8s_files() if not p.name.endswith(".example.yaml")}
    assert listed == on_disk
    assert "secret.example.yaml" not in listed, "placeholder secrets must never be applied"


def test_kustomize_builds_and_the_result_validates() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed; `kubectl kustomize deploy/k8s` was not run")
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    result = _run(kubectl, "kustomize", str(K8S))
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") == len(HUB_COMPONENTS)
    assert kinds.count("PodDisruptionBudget") == len(HUB_COMPONENTS)
    assert {"Namespace", "ConfigMap", "Job", "Service", "ServiceAccount"} <= set(kinds)
    for doc in docs:
        assert doc["metadata"].get("namespace", "ketenhub") == "ketenhub" or doc["kind"] == "Namespace"
        kv.validate(doc, K8S_VERSION, strict=True)


def test_k8s_deployments_are_probed_bounded_hardened_and_scraped() -> None:
    docs = _all_k8s_docs()
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    pdb_selectors = [d["spec"]["selector"]["matchLabels"] for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert sorted(d["metadata"]["name"] for d in deployments) == sorted(
        f"ketenhub-{c}" for c in HUB_COMPONENTS
    )
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert set(container["resources"]) == {"requests", "limits"}, name
        assert container["resources"]["limits"].get("memory"), name
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True, name
        assert pod["spec"]["enableServiceLinks"] is False, name  # KETENHUB_API_SERVICE_HOST & co
        assert pod["spec"]["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true", name
        port = str(container["ports"][0]["containerPort"])
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == port, name
        assert deployment["spec"]["selector"]["matchLabels"] in pdb_selectors, (
            f"{name}: no PodDisruptionBudget"
        )
        component = name.removeprefix("ketenhub-")
        assert container["args"] == ["run", "--components", component]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["enableServiceLinks"] is False
    (service,) = [d for d in docs if d["kind"] == "Service"]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "api"


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_k8s_pods_are_reached_through_the_ingress_and_prometheus_only() -> None:
    """Every pod serves the partner and operator API and an open /metrics: without a policy any pod
    in the cluster reached them past the ingress, and any pod could call out anywhere."""
    docs = _all_k8s_docs()
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    [deny] = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert sorted(deny["spec"]["policyTypes"]) == ["Egress", "Ingress"] and "ingress" not in deny["spec"]
    pods = [
        (d["metadata"]["name"], d["spec"]["template"]["metadata"]["labels"])
        for d in docs
        if d["kind"] in ("Deployment", "Job")
    ]
    for name, labels in pods:
        sources = [
            rule["from"]
            for p in policies
            if _selects(p["spec"]["podSelector"], labels)
            for rule in p["spec"].get("ingress", [])
        ]
        namespaces = {
            f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for r in sources for f in r
        }
        wanted = (
            {"monitoring", "ingress-nginx"}
            if labels.get("app.kubernetes.io/component") == "api"
            else {"monitoring"}
        )
        assert namespaces == wanted, name
        assert any(
            _selects(p["spec"]["podSelector"], labels) and p["spec"].get("egress") for p in policies
        ), name
    env = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert env["FORWARDED_ALLOW_IPS"], "behind the ingress every client would be the ingress's address"


def test_a_pod_not_ready_for_a_partners_outage_does_not_block_a_node_drain() -> None:
    budgets = [d for d in _all_k8s_docs() if d["kind"] == "PodDisruptionBudget"]
    assert budgets and all(b["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow" for b in budgets)


SECRET_NAME = "ketenhub-secrets"
# Settings that hold a secret: on Kubernetes each is read from a file (KETENHUB_<SETTING>_FILE), so
# that no container's environment holds it. The database URL holds the database's password.
_SECRETISH = re.compile(r"PASSWORD|SECRET|DATABASE__URL")
# A variable a manifest leaves commented out for the operator to set: mail.yaml's SMTP login.
_OPT_IN = re.compile(r"^\s*# - \{name: (KETENHUB_\w+), value: (\S+)\}$", re.MULTILINE)


@dataclass(frozen=True)
class Pod:
    """A Deployment's or Job's pod, and the variables its manifest leaves for the operator to set."""

    where: str  # kind/name
    spec: dict[str, Any]
    opt_in: dict[str, str]


def _k8s_pods() -> list[Pod]:
    return [
        Pod(f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"], _opt_in(path))
        for path in _k8s_files()
        for doc in _k8s_docs(path)
        if doc["kind"] in ("Deployment", "Job")
    ]


def _opt_in(path: Path) -> dict[str, str]:
    return dict(_OPT_IN.findall(path.read_text()))


def _example_secret() -> dict[str, str]:
    (secret,) = _k8s_docs(K8S / "secret.example.yaml")
    assert (secret["kind"], secret["metadata"]["name"]) == ("Secret", SECRET_NAME)
    data: dict[str, str] = secret["stringData"]
    return data


def _k8s_configmaps() -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d["data"] for d in _all_k8s_docs() if d["kind"] == "ConfigMap"}


@dataclass(frozen=True)
class SecretFile:
    """A file of a Secret volume, as a container sees it."""

    mount: dict[str, Any]
    source: dict[str, Any]  # the volume's `secret:`
    key: str


def _secret_file(pod: dict[str, Any], container: dict[str, Any], path: str) -> SecretFile | None:
    """The Secret key that `container` finds at `path`; None when no Secret volume it mounts has it."""
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        source = volumes[mount["name"]].get("secret")
        prefix = mount["mountPath"].rstrip("/") + "/"
        if source is None or not path.startswith(prefix):
            continue
        for item in source.get("items") or []:
            if item["path"] == path.removeprefix(prefix):
                return SecretFile(mount, source, item["key"])
    return None


def _k8s_secret_problems(pods: list[Pod], configmaps: dict[str, dict[str, str]], keys: set[str]) -> list[str]:
    """Each way a secret reaches a hub container other than as a file of the Secret, readable by the
    hub's user alone and there whenever the hub reads it, one line each. `keys`: the Secret's keys."""
    problems = [
        f"ConfigMap {name}: {key} puts a secret in the environment"
        for name, data in configmaps.items()
        for key in data
        if _SECRETISH.search(key)
    ]
    for pod in pods:
        for container in [*pod.spec.get("initContainers", []), *pod.spec["containers"]]:
            problems += _container_secret_problems(pod, container, keys)
    return problems


def _container_secret_problems(pod: Pod, container: dict[str, Any], keys: set[str]) -> list[str]:
    where = f"{pod.where} {container['name']}"
    problems = [f"{where}: envFrom a Secret" for s in container.get("envFrom") or [] if "secretRef" in s]
    env = {e["name"]: e for e in container.get("env") or []}
    for name, entry in env.items():
        if "secretKeyRef" in (entry.get("valueFrom") or {}):
            problems.append(f"{where}: {name} puts a Secret's key in the environment")
        elif _SECRETISH.search(name) and not name.endswith("_FILE"):
            problems.append(f"{where}: {name} puts a secret in the environment")
    named = {n: str(e["value"]) for n, e in env.items() if n.endswith("_FILE") and "value" in e}
    read = set()
    for name, path in {**pod.opt_in, **named}.items():
        found = _secret_file(pod.spec, container, path)
        if found is None:
            problems.append(f"{where}: {name} names no file of a Secret volume it mounts")
            continue
        read.add((found.mount["name"], found.key))
        if found.source["secretName"] != SECRET_NAME or found.key not in keys:
            problems.append(
                f"{where}: {name} reads {found.key} of {found.source['secretName']}, not in the example"
            )
        if found.source.get("optional") and name in named:
            problems.append(
                f"{where}: {name} names {found.key}, which the Secret may lack: the hub would stop"
            )
        if found.mount.get("readOnly") is not True or "subPath" in found.mount:
            problems.append(f"{where}: {name} is on a writable or subPath mount")
    volumes = {v["name"]: v for v in pod.spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        source = volumes[mount["name"]].get("secret")
        if source is None:
            continue
        items = source.get("items") or []
        if not items:
            problems.append(f"{where}: volume {mount['name']} mounts every key of the Secret")
        for item in items:
            if (mount["name"], item["key"]) not in read or item["path"] != item["key"]:
                problems.append(f"{where}: volume {mount['name']} mounts {item['key']}, read by no variable")
        # The kubelet writes the files as root: with fsGroup they are of that group, which every process
        # of the pod is in, and the group's read bit lets the hub's user read them.
        mode = source.get("defaultMode", 0o644)
        if mode & 0o007 or not mode & 0o040 or pod.spec["securityContext"].get("fsGroup") is None:
            problems.append(
                f"{where}: volume {mount['name']} has mode {mode:o}, not 0440 with the pod's fsGroup"
            )
    return problems


def test_k8s_secrets_reach_the_containers_as_files_never_as_environment_variables() -> None:
    """No container's environment holds a secret (child processes inherit it; /proc and the node's
    container runtime show it): each is a file of the Secret ketenhub-secrets, of a volume with only
    the keys that pod reads, readable by the hub's user and no other. A `_FILE` variable names a file
    that is there whenever the pod runs: a missing one stops the hub."""
    assert _k8s_secret_problems(_k8s_pods(), _k8s_configmaps(), set(_example_secret())) == []


def test_k8s_secret_check_catches_a_secret_in_the_environment_and_a_file_that_may_be_missing() -> None:
    """The check above is not vacuous: each way a secret could be given wrongly is reported."""
    pods = _k8s_pods()
    (intake,) = [p for p in pods if p.where == "Deployment/ketenhub-intake"]
    (mail,) = [p for p in pods if p.where == "Deployment/ketenhub-mail"]
    (container,) = intake.spec["containers"]
    given = {"secretKeyRef": {"name": SECRET_NAME, "key": "pseudonymisation-secret"}}
    container["env"] = [  # as the manifests gave it before
        {"name": "KETENHUB_SECRET", "valueFrom": given} if e["name"] == "KETENHUB_SECRET_FILE" else e
        for e in container["env"]
    ]
    volumes = {v["name"]: v for v in intake.spec["volumes"]}
    volumes["secrets"]["secret"]["defaultMode"] = 0o644
    (mail_container,) = mail.spec["containers"]
    mail_container["env"].append(  # the SMTP login named although the Secret may not hold it
        {"name": "KETENHUB_SMTP__PASSWORD_FILE", "value": "/etc/ketenhub/smtp/smtp-password"}
    )
    configmaps = {"ketenhub-config": {"KETENHUB_SMTP__PASSWORD": "in-the-clear"}}
    problems = _k8s_secret_problems([intake, mail], configmaps, set(_example_secret()))
    assert problems == [
        "ConfigMap ketenhub-config: KETENHUB_SMTP__PASSWORD puts a secret in the environment",
        "Deployment/ketenhub-intake ketenhub: KETENHUB_SECRET puts a Secret's key in the environment",
        "Deployment/ketenhub-intake ketenhub: volume secrets mounts pseudonymisation-secret, read by no"
        " variable",
        "Deployment/ketenhub-intake ketenhub: volume secrets has mode 644, not 0440 with the pod's fsGroup",
        "Deployment/ketenhub-mail ketenhub: KETENHUB_SMTP__PASSWORD_FILE names smtp-password, which the"
        " Secret may lack: the hub would stop",
    ]


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The hub's settings from `env` alone (no KETENHUB_* of the test's own environment)."""
    from hub.config import load_settings

    for key in [k for k in os.environ if k.startswith("KETENHUB_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


def test_k8s_pods_read_their_secrets_as_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each pod's environment, with the keys of the example Secret it mounts written as the kubelet
    writes them, gives the settings it needs: the database URL, the pseudonymisation secret, its own
    Kafka password; and no SMTP login until mail.yaml names its files."""
    secret = _example_secret()
    for pod in _k8s_pods():
        (container,) = pod.spec["containers"]
        name = pod.where.partition("/")[2]
        env = container_environment(container, _k8s_configmaps(), f"{name}-5d8c7b9f4-x2k7q")
        env = with_mounted_secrets(env, pod.spec, container, {SECRET_NAME: secret}, tmp_path / name)
        settings = _settings_from(env, monkeypatch)
        assert settings.secret is not None, pod.where
        assert settings.secret.get_secret_value() == secret["pseudonymisation-secret"], pod.where
        assert settings.database.url == secret["database-url"], pod.where
        assert settings.smtp.username is None and settings.smtp.password is None, pod.where
        if pod.where.startswith("Deployment/"):
            component = container["args"][2]
            assert settings.kafka.sasl_username == f"ketenhub-{component}"
            assert settings.kafka.sasl_password is not None, pod.where
            assert settings.kafka.sasl_password.get_secret_value() == secret[f"kafka-{component}-password"]
            assert settings.kafka.client_id.startswith(name)


def test_k8s_smtp_login_is_optional_and_read_once_mail_yaml_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Secret without smtp-username and smtp-password starts the mail pods (their volume is optional,
    and nothing names its files); with them, the two variables mail.yaml leaves commented out give the
    login; named while the Secret lacks them, they stop the hub at start with one line."""
    from hub.errors import ConfigError

    secret = _example_secret()
    without = {k: v for k, v in secret.items() if not k.startswith("smtp-")}
    (mail,) = [p for p in _k8s_pods() if p.where == "Deployment/ketenhub-mail"]
    assert set(mail.opt_in) == {"KETENHUB_SMTP__USERNAME_FILE", "KETENHUB_SMTP__PASSWORD_FILE"}
    (container,) = mail.spec["containers"]
    env = container_environment(container, _k8s_configmaps(), "ketenhub-mail-5d8c7b9f4-x2k7q")

    def settings(env: dict[str, str], data: dict[str, str], into: str) -> Any:
        files = with_mounted_secrets(env, mail.spec, container, {SECRET_NAME: data}, tmp_path / into)
        return _settings_from(files, monkeypatch)

    plain = settings(env, without, "without")
    assert plain.smtp.username is None and plain.smtp.password is None
    login = settings({**env, **mail.opt_in}, secret, "login")
    assert login.smtp.username == secret["smtp-username"]
    assert login.smtp.password.get_secret_value() == secret["smtp-password"]
    with pytest.raises(ConfigError, match=r"^KETENHUB_SMTP__(USERNAME|PASSWORD)_FILE: cannot read .*smtp-"):
        settings({**env, **mail.opt_in}, without, "named-without")


def test_example_secret_holds_placeholders_for_exactly_the_keys_the_pods_read() -> None:
    secret = _example_secret()
    for key, value in secret.items():
        assert "REPLACE-ME" in value, f"{key} looks like a real value"
    mounted = {
        item["key"]
        for pod in _k8s_pods()
        for volume in pod.spec.get("volumes") or []
        if "secret" in volume
        for item in volume["secret"].get("items") or []
    }
    referenced = {
        ref["secretKeyRef"]["key"]
        for doc in _all_k8s_docs()
        for ref in _walk(doc)
        if isinstance(ref, dict) and "secretKeyRef" in ref
    }
    assert mounted | referenced <= set(secret), "the example must show every key the manifests read"
    assert set(secret) <= mounted, "the example shows a key no pod reads"


# --- (c) Prometheus ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "alerts.yml"),
        ("test", "rules", "alerts.test.yml"),
    ],
    ids=lambda a: " ".join(a),
)
def test_promtool_accepts_config_rules_and_rule_tests(args: tuple[str, ...]) -> None:
    result = _run(_promtool(), *args, cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_cover_lag_dead_letters_readiness_and_retries() -> None:
    rules = [r for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    by_metric: dict[str, list[str]] = {}
    for rule in rules:
        assert rule.get("for"), f"{rule['alert']} fires on a single scrape"
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        for metric in promql_metric_names(rule["expr"]):
            assert _allowed_metric(metric) or metric == "up", f"{rule['alert']} reads unknown metric {metric}"
            by_metric.setdefault(metric, []).append(rule["alert"])
    for metric in (
        "kafka_consumergroup_lag",
        "kafka_consumergroup_lag_seconds",
        "ketenhub_dlq_messages",
        "ketenhub_ready",
        "ketenhub_delivery_attempts_total",  # calls failed and retried (the retry topics are not consumed)
        "ketenhub_consumergroup_expired_unread_records_total",
        "ketenhub_retry_parked",
        "ketenhub_outbox_parked",
        "ketenhub_outbox_oldest_seconds",
        "ketenhub_lag_probe_up",
    ):
        assert metric in by_metric, f"no alert on {metric}"
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts.test.yml").read_text()))
    assert {r["alert"] for r in rules} <= tested, "every alert has a promtool unit test"


def test_prometheus_scrapes_every_hub_component() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ketenhub"]
    names = {n for sd in job["dns_sd_configs"] for n in sd["names"]}
    assert names == set(HUB_COMPONENTS)
    assert names <= set(_compose()["services"])
    assert config["rule_files"] == ["alerts.yml"]


# --- (d) Grafana ---------------------------------------------------------------------------------


def test_every_metric_the_alerts_and_dashboard_may_read_is_one_the_hub_exports() -> None:
    """A list of its own let an alert query a series the hub never had: it could not fire."""
    from hub.metrics import Metrics

    exported = {m.name for m in Metrics().registry.collect()}  # counters without their _total
    source = (ROOT / "hub" / "ops" / "prometheus.py").read_text()
    exported |= set(re.findall(r'"((?:ketenhub|kafka)_[a-z_]+)"', source))
    for name in CONTRACT_METRICS | CONTRACT_HISTOGRAMS:
        assert name.removesuffix("_total") in exported, name


def test_dashboard_queries_read_only_the_hubs_metrics() -> None:
    queries = _dashboard_queries()
    assert len(queries) >= 8
    seen: set[str] = set()
    for where, expr in queries:
        names = promql_metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        unknown = sorted(n for n in names if not _allowed_metric(n))
        assert unknown == [], f"{where}: unknown metrics {unknown} in {expr!r}"
        seen |= names
    dashboard = json.loads(DASHBOARD.read_text())
    for variable in dashboard["templating"]["list"]:
        metric = re.match(r"label_values\((\w+)", variable["query"]["query"])
        assert metric and _allowed_metric(metric.group(1)), variable["name"]
    assert "ketenhub_dlq_messages" in seen and "kafka_consumergroup_lag_seconds" in seen


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = _promtool()
    substitutes = {"$__rate_interval": "5m", "$__interval": "1m", "$consumergroup": ".*"}
    rules = []
    for index, (_, expr) in enumerate(_dashboard_queries()):
        for variable, value in substitutes.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    rule_file = tmp_path / "dashboard_queries.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run(promtool, "check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_finds_the_datasource_and_the_dashboard() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "ketenhub.yml").read_text())["providers"]
    mounts = _compose()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert datasource["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


# --- (e) settings --------------------------------------------------------------------------------


def _ketenhub_variables_set_by_deploy() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}

    def note(name: str, where: str) -> None:
        if name.startswith("KETENHUB_"):
            found.setdefault(name, set()).add(where)

    compose = _compose()
    for name, service in compose["services"].items():
        for key in service.get("environment") or {}:
            note(key, f"compose.yaml services.{name}")
    for key in compose["x-hub-environment"]:
        note(key, "compose.yaml x-hub-environment")
    for doc in _all_k8s_docs():
        where = f"k8s {doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "ConfigMap":
            for key in doc["data"]:
                note(key, where)
        for node in _walk(doc):
            if isinstance(node, dict) and "env" in node and isinstance(node["env"], list):
                for entry in node["env"]:
                    note(entry["name"], where)
    for pod in _k8s_pods():  # left commented out for the operator to set (the SMTP login)
        for key in pod.opt_in:
            note(key, f"k8s {pod.where}")
    import dockerfile as dockerfile_parser

    for command in dockerfile_parser.parse_file(str(ROOT / "Dockerfile")):
        if command.cmd.upper() == "ENV":
            for key in command.value[::2]:
                note(key, "Dockerfile ENV")
    return found


def test_deploy_sets_only_settings_the_hub_reads() -> None:
    """A name the hub does not read was ignored, and the hub ran on the default it was meant to set."""
    from hub.config import setting_names
    from hub.config_env import FILE_SUFFIX

    pytest.importorskip("dockerfile", reason="pip install dockerfile")
    used = _ketenhub_variables_set_by_deploy()
    read = setting_names() | {f"{name}{FILE_SUFFIX}" for name in setting_names()}  # or from a file
    unknown = {name: sorted(where) for name, where in used.items() if name not in read}
    assert unknown == {}, "not a setting of the hub"
    assert {name.removesuffix(FILE_SUFFIX) for name in used} >= REQUIRED_SETTINGS


def test_readme_documents_every_setting_deploy_sets_and_only_settings() -> None:
    from hub.config import NOT_SETTINGS, setting_names
    from hub.config_env import FILE_SUFFIX

    pytest.importorskip("dockerfile", reason="pip install dockerfile")
    readme = (DEPLOY / "README.md").read_text()
    missing = sorted(s for s in _ketenhub_variables_set_by_deploy() if f"`{s}`" not in readme)
    assert missing == [], f"deploy/README.md does not document {missing}"
    named = {n.removesuffix(FILE_SUFFIX) for n in re.findall(r"`(KETENHUB_[A-Z0-9_]+)`", readme)}
    assert sorted(named - setting_names() - NOT_SETTINGS) == [], "deploy/README.md names no such setting"
    assert "## Not run here" in readme


def test_each_component_logs_in_to_kafka_with_its_own_user_and_password() -> None:
    """A Deployment reading another component's password logs in as that one: it gets that one's
    ACLs, and rotating one password breaks two components."""
    for doc in _all_k8s_docs():
        if doc["kind"] != "Deployment":
            continue
        component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = doc["spec"]["template"]["spec"]
        [container] = pod["containers"]
        env = {entry["name"]: entry for entry in container["env"]}
        assert env["KETENHUB_KAFKA__SASL_USERNAME"]["value"] == f"ketenhub-{component}"
        found = _secret_file(pod, container, env["KETENHUB_KAFKA__SASL_PASSWORD_FILE"]["value"])
        assert found is not None, component
        assert (found.source["secretName"], found.key) == (SECRET_NAME, f"kafka-{component}-password")
        kafka = {i["key"] for v in pod["volumes"] if "secret" in v for i in v["secret"]["items"]}
        assert {k for k in kafka if k.startswith("kafka-")} == {found.key}, "no other component's password"


# --- Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_builds_a_slim_non_root_image_with_a_health_check() -> None:
    dockerfile_parser = pytest.importorskip("dockerfile", reason="pip install dockerfile")
    # BuildKit's own parser: a syntax error raises here.
    commands = dockerfile_parser.parse_file(str(ROOT / "Dockerfile"))
    args = {c.value[0].split("=", 1)[0]: c.value[0].split("=", 1)[1] for c in commands if c.cmd == "ARG"}
    stages = [c for c in commands if c.cmd == "FROM"]
    assert len(stages) >= 2, "multi-stage build"
    for stage in stages:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], stage.value[0])
        assert image.startswith("python:3.11-slim"), image
    final = commands[commands.index(stages[-1]) :]
    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users, "the runtime stage sets a USER"
    assert users[-1].split(":")[0] not in {"0", "root"}
    (healthcheck,) = [c for c in final if c.cmd == "HEALTHCHECK"]
    assert "/healthz" in " ".join(healthcheck.value)
    assert any("pip install ." in " ".join(c.value) for c in commands if c.cmd == "RUN")
    (entrypoint,) = [c for c in final if c.cmd == "ENTRYPOINT"]
    assert entrypoint.value == ("ketenhub",)


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    assert patterns[0] == "*", "everything is excluded unless listed"
    included = {p[1:] for p in patterns if p.startswith("!")}
    assert included == {"pyproject.toml", "README.md", "schemas", "connectors", "hub"}
    assert "**/ketenhub.db*" in patterns
