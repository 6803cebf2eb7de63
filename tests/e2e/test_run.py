"""`ketenhub run` as a user starts it: ready, serving, and gone cleanly with its broker."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hub.embedded import free_port
from hub.secret_fingerprint import fingerprint
from tests.conftest import TEST_SECRET

pytestmark = pytest.mark.e2e
KETENHUB = str(Path(sys.executable).with_name("ketenhub"))


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _wait_ready(port: int, proc: subprocess.Popen[str], timeout_s: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
            if r.status_code == 200:
                return r
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("ketenhub run was not ready in time")


def _start(tmp_path: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETENHUB_")}
    return subprocess.Popen(
        [KETENHUB, "run", "--port", str(port), *extra],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_is_ready_serves_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    proc = _start(tmp_path, port)
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline()]
        assert banner == ["ketenhub is running\n"]
        socket.create_connection(("127.0.0.1", port), timeout=1).close()  # said once it listens
        while not banner[-1].startswith("  stop with Ctrl-C"):
            banner.append(proc.stdout.readline())
        ready = _wait_ready(port, proc)
        assert ready.json()["checks"] == {"store": "ok", "broker": "ok", "verwijsindex": "ok", "mail": "ok"}
        brokers = _children(proc.pid)
        assert brokers, "the embedded broker runs as a child process"
        spec = httpx.get(f"http://127.0.0.1:{port}/asyncapi.json", timeout=5).json()
        assert spec["asyncapi"].startswith("3.")
        assert (
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=5).json()["info"]["title"]
            == "ketenhub"
        )
        proc.send_signal(sig)
        rest, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    out = "".join(banner) + rest
    assert f"http://127.0.0.1:{port}/readyz" in out and rest == "ketenhub stopped\n"
    assert "sqlite+aiosqlite:///./ketenhub.db" in out
    assert (tmp_path / "ketenhub.db").exists()
    assert not any(_alive(b) for b in brokers), "embedded broker left running"
    # the first start recorded the fingerprint of the secret it made, never the secret
    secret = (tmp_path / "ketenhub.secret").read_text().strip()
    with sqlite3.connect(tmp_path / "ketenhub.db") as db:
        assert db.execute("SELECT fingerprint FROM secret_fingerprint").fetchall() == [(fingerprint(secret),)]
        assert not any(secret in line for line in db.iterdump())


def test_killed_hub_takes_its_broker_along(tmp_path: Path) -> None:
    port = free_port()
    proc = _start(tmp_path, port)
    try:
        _wait_ready(port, proc)
        brokers = _children(proc.pid)
        assert brokers, "no embedded broker found among the hub's children"  # else nothing is checked
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(b) for b in brokers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(b) for b in brokers), "embedded broker orphaned after SIGKILL"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_bad_setting_stops_start_with_one_line(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KETENHUB_")},
        "KETENHUB_HTTP__PORT": "eighty",
    }
    proc = subprocess.run(
        [KETENHUB, "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "ketenhub: configuration error: KETENHUB_HTTP__PORT: Input should be a valid integer, "
        "unable to parse string as an integer (got 'eighty')"
    ]


def _run_refused(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KETENHUB_")}
    return subprocess.run(
        [KETENHUB, "run", *args],
        cwd=tmp_path,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _last_line(stderr: str) -> str:
    """The one line of `ketenhub:` the command said (a migration's log lines may come before it)."""
    said = [line for line in stderr.splitlines() if line.startswith("ketenhub")]
    assert len(said) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return said[0]


def test_a_busy_port_stops_run_before_anything_of_the_hub_starts(tmp_path: Path) -> None:
    """The banner came first, then uvicorn's bind error and exit 3, with the broker, the store and the
    consumers started meanwhile, and nothing said about --port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run_refused(tmp_path, "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"ketenhub: port {port} in use on 127.0.0.1: use --port or KETENHUB_HTTP__PORT"
    ]
    assert done.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no database, no secret: nothing was started


def test_run_refuses_a_secret_other_than_the_one_the_hub_first_started_with(tmp_path: Path) -> None:
    """With another state dir (another ketenhub.secret) the hub started on the same database and filed
    new data under youth keys no one finds again."""
    import asyncio

    from hub.secret_fingerprint import check_secret
    from hub.store import Store

    hub_dir, elsewhere = tmp_path / "hub", tmp_path / "elsewhere"
    hub_dir.mkdir()
    elsewhere.mkdir()
    url = f"sqlite+aiosqlite:///{hub_dir / 'ketenhub.db'}"

    async def first_start() -> None:  # what the hub's first `ketenhub run` records
        store = Store(url)
        try:
            await store.migrate()
            await check_secret(
                store, "the-hub-s-own-secret-" + "h" * 32, source="KETENHUB_SECRET", record=True
            )
        finally:
            await store.close()

    asyncio.run(first_start())
    done = _run_refused(
        tmp_path, "--port", str(free_port()), KETENHUB_DATABASE__URL=url, KETENHUB_STATE_DIR=str(elsewhere)
    )
    assert done.returncode == 2, done.stderr[-2000:]
    said = _last_line(done.stderr)
    assert said.startswith(
        f"ketenhub: configuration error: KETENHUB_STATE_DIR ({elsewhere / 'ketenhub.secret'}): not the secret"
        f" the hub first started with on {url}"
    ), said
    assert "ketenhub is running" not in done.stdout


@pytest.mark.parametrize(
    ("env", "said"),
    [
        (
            {"KETENHUB_DATABASE__URL": "postgresql+asyncpg://hub:s3cr3t-pw@127.0.0.1:1/hub"},
            "ketenhub: database unreachable: postgresql+asyncpg://hub:***@127.0.0.1:1/hub (",
        ),
        (
            {"KETENHUB_STATE_DIR": "/nonexistent/dir"},
            "ketenhub: configuration error: KETENHUB_STATE_DIR: /nonexistent/dir is not a directory",
        ),
        (
            {"KETENHUB_COMPONENTS": "intake,teleport"},
            "ketenhub: configuration error: KETENHUB_COMPONENTS: unknown ['teleport']",
        ),
        (
            {"KETENHUB_VERWIJSINDEX__RETRY_SCHEDULE_S": "1,NaN"},
            "ketenhub: configuration error: KETENHUB_VERWIJSINDEX__RETRY_SCHEDULE_S: each delay must be",
        ),
    ],
)
def test_run_that_cannot_start_says_why_in_one_line(tmp_path: Path, env: dict[str, str], said: str) -> None:
    """An unreachable database, a state dir that is not there, or a list setting written with commas
    ended in tracebacks of 70 to 530 lines."""
    done = _run_refused(tmp_path, "--port", str(free_port()), **env)
    assert done.returncode in (1, 2), done.stderr[-3000:]
    line = _last_line(done.stderr)
    assert line.startswith(said), line
    assert "s3cr3t-pw" not in done.stderr + done.stdout and "ketenhub is running" not in done.stdout


@pytest.mark.parametrize(
    ("args", "env"),
    [(("--components", ","), {}), (("--components", ""), {}), ((), {"KETENHUB_COMPONENTS": "[]"})],
)
def test_run_with_no_component_named_says_so_and_starts_nothing(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    """`--components ","` (an unset shell variable in a script, say) started a hub with nothing in it,
    its banner still saying it was ready."""
    done = _run_refused(tmp_path, "--port", str(free_port()), *args, **env)
    assert done.returncode == 2, done.stderr[-3000:]
    assert _last_line(done.stderr).startswith("ketenhub: configuration error: no component to run")
    assert done.stdout == "" and list(tmp_path.iterdir()) == []


def _start_as_a_job(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    """`ketenhub run` as a shell starts it: a process group of its own, which a terminal's Ctrl-C
    signals as a whole (`os.killpg`), SIGINT not ignored. Its output goes to files, read at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETENHUB_")}
    with (tmp_path / "out").open("w") as out, (tmp_path / "err").open("w") as err:
        return subprocess.Popen(
            [KETENHUB, "run", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def _listening_broker(proc: subprocess.Popen[str], timeout_s: float = 60.0) -> tuple[int, str]:
    """The embedded broker's pid and address once it takes connections: the hub is starting."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "ketenhub run ended before its broker took connections"
        for pid in _children(proc.pid):
            try:
                args = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
            except OSError:
                continue
            if "--listener-url" in args:
                address = args[args.index("--listener-url") + 1].removeprefix("tcp://")
                host, port = address.rsplit(":", 1)
                try:
                    socket.create_connection((host, int(port)), timeout=1).close()
                except OSError:
                    continue
                return pid, address
        time.sleep(0.02)
    raise AssertionError("the embedded broker took no connections in time")


def _wait_for_a_member(proc: subprocess.Popen[str], bootstrap: str, timeout_s: float = 60.0) -> None:
    """Until the intake's consumer group has a member: the hub's consumers are joining their groups
    (on the embedded broker that takes about a second)."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def members() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            said = await admin.describe_consumer_groups(["ketenhub-intake"])
        finally:
            await admin.close()
        return sum(len(group[5]) for response in said for group in response.groups)

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "ketenhub run ended before its consumers joined their groups"
        if asyncio.run(members()):
            return
        time.sleep(0.02)
    raise AssertionError("the intake's consumer group had no member in time")


def _end(proc: subprocess.Popen[str], tmp_path: Path, timeout_s: float = 90.0) -> tuple[str, str]:
    """Wait for the process to end (killed with its group if it does not); its stdout and stderr."""
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        raise AssertionError(
            f"ketenhub run still ran {timeout_s:g} s on: {(tmp_path / 'err').read_text()[-3000:]}"
        ) from None
    return (tmp_path / "out").read_text(), (tmp_path / "err").read_text()


def _gone(pid: int, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


@pytest.mark.parametrize(
    ("sig", "when"),
    [(signal.SIGINT, "broker listens"), (signal.SIGINT, "groups join"), (signal.SIGTERM, "groups join")],
)
def test_a_signal_to_the_starting_hub_s_process_group_stops_it_cleanly(
    tmp_path: Path, sig: signal.Signals, when: str
) -> None:
    """Ctrl-C at a terminal signals the whole process group: the broker, in the hub's, died with it, and
    a hub whose consumers were joining their groups waited for it for ever, deaf to any further signal
    (or ended in uvicorn's traceback, exit 3). Now the broker hears only the hub, which stops it."""
    proc = _start_as_a_job(tmp_path, free_port())
    try:
        broker, address = _listening_broker(proc)
        if when == "groups join":
            _wait_for_a_member(proc, address)
        os.killpg(proc.pid, sig)
        out, err = _end(proc, tmp_path)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "Unclosed" not in err, err[-3000:]
    # stopped while starting, or (the signal came as start-up ended) after it: either way cleanly
    assert out.splitlines()[-1] in (f"ketenhub stopped while starting ({sig.name})", "ketenhub stopped"), out
    assert _gone(broker), "embedded broker left running"


def test_an_embedded_broker_gone_during_start_up_ends_it_with_one_line(tmp_path: Path) -> None:
    """The hub's consumers waited for a broker that was gone, for ever, the log filling with their
    retries; now start-up ends within a second of it, and says so."""
    proc = _start_as_a_job(tmp_path, free_port())
    try:
        broker, address = _listening_broker(proc)
        _wait_for_a_member(proc, address)
        os.kill(broker, signal.SIGKILL)
        out, err = _end(proc, tmp_path)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    if "ketenhub is running" in out:  # start-up ended before the broker was killed: nothing to see
        pytest.skip("the hub had started when its broker was killed")
    assert proc.returncode == 1, err[-3000:]
    assert _last_line(err) == "ketenhub: the embedded broker stopped during start-up (killed by SIGKILL)"


def test_run_with_brokers_that_cannot_be_reached_says_so_in_one_line(tmp_path: Path) -> None:
    """A broker that could not be reached ended start-up in uvicorn's traceback of some 90 lines, exit 3,
    and an unclosed Kafka producer."""
    with socket.socket() as refusing:  # bound, not listening: a connection there is refused
        refusing.bind(("127.0.0.1", 0))
        brokers = f"127.0.0.1:{refusing.getsockname()[1]}"
        done = _run_refused(
            tmp_path,
            "--port",
            str(free_port()),
            KETENHUB_KAFKA__BOOTSTRAP_SERVERS=brokers,
            KETENHUB_SECRET=TEST_SECRET,
            KETENHUB_DATABASE__URL=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
        )
    assert done.returncode == 1, done.stderr[-3000:]
    said = _last_line(done.stderr)
    assert said.startswith(f"ketenhub: brokers unreachable: {brokers} ("), said
    assert said.endswith("; check KETENHUB_KAFKA__BOOTSTRAP_SERVERS and the brokers"), said
    assert "Unclosed" not in done.stderr and "ketenhub is running" not in done.stdout
