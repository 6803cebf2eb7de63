"""Operator logins over the API: the password check runs beside the event loop, not on it; guessing
is throttled and audited; a reset or disable ends sessions; the cookie is Secure; other sites are
refused; every answer carries the browser's security headers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from sqlalchemy import func, select

from hub.embedded import EmbeddedKafka
from hub.ops import auth
from hub.ops.auth import add_operator, set_disabled
from hub.ops.tables import operator_sessions
from hub.ops.throttle import LoginThrottle
from hub.store import Store
from hub.store.tables import audit_log
from tests.conftest import make_settings
from tests.helpers.kafka import wait_for
from tests.integration.test_ops_lag import PASSWORD, ops_hub

pytestmark = pytest.mark.integration


class _Recording:
    """The hub's password hasher, noting the thread of every check."""

    def __init__(self, real: Any) -> None:
        self.real, self.threads = real, []

    def hash(self, password: str) -> str:
        return str(self.real.hash(password))

    def verify(self, hashed: str, password: str) -> bool:
        self.threads.append(threading.get_ident())
        return bool(self.real.verify(hashed, password))


async def test_password_checks_leave_the_event_loop_free(
    kafka: EmbeddedKafka, db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each check (about 150 ms of CPU) ran on the event loop: ten anonymous logins at once held
    every partner's request and every consumer for over a second."""
    recording = _Recording(auth._hasher)
    monkeypatch.setattr(auth, "_hasher", recording)
    loop_thread = threading.get_ident()
    async with ops_hub(make_settings(kafka, db_url, unique)) as (_, client):
        anon = httpx.AsyncClient(transport=client._transport, base_url="http://hub")
        tries = [{"username": name, "password": "not the password"} for name in ("olga", "nobody", "x")]
        answers = await asyncio.gather(*[anon.post("/ops/login", json=t) for t in tries])
        assert [a.status_code for a in answers] == [401, 401, 401]
        good = await anon.post("/ops/login", json={"username": "olga", "password": PASSWORD})
        assert good.status_code == 200, good.text
        # the session works (not /health: it probes the brokers, which may be slow to answer)
        assert (await anon.get("/ops/api/me")).json()["username"] == "olga"
    # the fixture's own login, the three refused (the unknown user against a dummy hash) and the good one
    assert len(recording.threads) == 5
    assert loop_thread not in recording.threads


def _anonymous(client: httpx.AsyncClient, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """Another browser on the same hub, from `address`."""
    app = client._transport.app  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://hub")


async def _audit_rows(store: Store, prefix: str = "operator.") -> list[tuple[str, str, dict[str, Any]]]:
    async with store.connect() as conn:
        query = (
            select(audit_log.c.action, audit_log.c.user, audit_log.c.objects)
            .where(audit_log.c.action.startswith(prefix))
            .order_by(audit_log.c.id)
        )
        return [(r.action, r.user, r.objects) for r in await conn.execute(query)]


async def test_a_reset_or_a_disable_ends_the_operators_sessions(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A reset password left the old cookie working, and `add` on a disabled operator let them in again."""
    async with ops_hub(make_settings(kafka, db_url, unique)) as (hub, client):
        assert hub.store is not None
        assert (await client.get("/ops/api/me")).status_code == 200
        assert await add_operator(hub.store, "olga", "a new password 42", "viewer", by="cli:root") is False
        assert (await client.get("/ops/api/me")).status_code == 401  # the old cookie is dead
        anon = _anonymous(client)
        assert (
            await anon.post("/ops/login", json={"username": "olga", "password": PASSWORD})
        ).status_code == 401
        fresh = await client.post("/ops/login", json={"username": "olga", "password": "a new password 42"})
        assert fresh.status_code == 200
        assert (await client.get("/ops/api/me")).json()["role"] == "viewer"

        assert await set_disabled(hub.store, "olga", True, by="cli:root") == 1
        assert (await client.get("/ops/api/me")).status_code == 401
        again = {"username": "olga", "password": "a new password 42"}
        assert (await client.post("/ops/login", json=again)).status_code == 401
        # a reset of a disabled operator keeps them out until they are enabled
        assert await add_operator(hub.store, "olga", "a new password 42", "operator", by="cli:root") is True
        assert (await client.post("/ops/login", json=again)).status_code == 401
        await set_disabled(hub.store, "olga", False, by="cli:root")
        assert (await client.post("/ops/login", json=again)).status_code == 200
        with pytest.raises(auth.UnknownOperator):
            await set_disabled(hub.store, "nobody", True)

        audited = [(a, u, o.get("operator")) for a, u, o in await _audit_rows(hub.store)]
        for done in ("operator.reset", "operator.disabled", "operator.enabled"):
            assert (done, "cli:root", "olga") in audited


async def test_failed_logins_are_throttled_per_name_and_per_address(
    kafka: EmbeddedKafka, tmp_path: Path, unique: str
) -> None:
    """25 wrong passwords, then the right one, logged in: nothing slowed a guesser down."""
    now = [1000.0]
    async with ops_hub(make_settings(kafka, f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", unique)) as (
        _,
        client,
    ):
        client._transport.app.state.login_throttle = LoginThrottle(clock=lambda: now[0])  # type: ignore[attr-defined]
        anon = _anonymous(client)
        wrong = {"username": "olga", "password": "not the password"}
        answers = [(await anon.post("/ops/login", json=wrong)).status_code for _ in range(25)]
        assert answers == [401] * 5 + [429] * 20
        right = await anon.post("/ops/login", json={"username": "olga", "password": PASSWORD})
        assert right.status_code == 429, right.text
        assert right.headers["content-type"] == "application/problem+json"
        assert 1 <= int(right.headers["retry-after"]) <= 60
        # the name is held from this address (in any case or spacing), not from every address: else
        # anyone could keep an operator out by failing under their name; another name is not held yet
        again = {"username": " OLGA ", "password": PASSWORD}
        assert (await anon.post("/ops/login", json=again)).status_code == 429
        elsewhere = _anonymous(client, "10.0.0.2")
        assert (await elsewhere.post("/ops/login", json={**wrong, "password": PASSWORD})).status_code == 200
        assert (await anon.post("/ops/login", json={"username": "x", "password": "y"})).status_code == 401
        now[0] += 61  # a minute later the name may try again
        assert (
            await anon.post("/ops/login", json={"username": "olga", "password": PASSWORD})
        ).status_code == 200

        # one address trying many names is held after 20 failures in a minute; others are not
        names = [{"username": f"user{i}", "password": "guess"} for i in range(25)]
        statuses = [(await anon.post("/ops/login", json=n)).status_code for n in names]
        assert statuses == [401] * 20 + [429] * 5
        form = await anon.post("/ops/login", data={"username": "olga", "password": PASSWORD})
        assert form.status_code == 429  # the login page's form too
        assert (
            await elsewhere.post("/ops/login", json={"username": "olga", "password": PASSWORD})
        ).status_code == 200


async def test_password_checks_that_may_wait_at_once_are_capped(
    kafka: EmbeddedKafka, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anonymous logins queued without limit on the two argon2 threads: anyone could fill the host."""
    release = threading.Event()

    class _Held(_Recording):
        def verify(self, hashed: str, password: str) -> bool:
            release.wait(30)
            return super().verify(hashed, password)

    async with ops_hub(make_settings(kafka, f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", unique)) as (
        _,
        client,
    ):
        monkeypatch.setattr(auth, "_hasher", _Held(auth._hasher))
        client._transport.app.state.login_throttle = LoginThrottle(at_once=3)  # type: ignore[attr-defined]
        clients = [_anonymous(client, f"10.0.1.{i}") for i in range(6)]
        tries = [
            asyncio.create_task(c.post("/ops/login", json={"username": f"u{i}", "password": "p"}))
            for i, c in enumerate(clients)
        ]
        # the three past the cap are refused at once; the three checks held by the hasher wait
        await wait_for(lambda: sum(t.done() for t in tries) >= 3, timeout_s=20)
        await asyncio.sleep(0.2)  # none of the held ones ends meanwhile
        done = [t for t in tries if t.done()]
        refused = [t.result() for t in done]
        release.set()
        answers = [r.status_code for r in refused] + [(await t).status_code for t in tries if t not in done]
        assert len(refused) == 3 and all(r.status_code == 503 and r.headers["retry-after"] for r in refused)
        assert sorted(answers) == [401, 401, 401, 503, 503, 503]


async def test_logins_and_logouts_are_logged_and_audited_without_passwords(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    """A failed or successful login, and a logout, left no trace: a guesser went unseen."""
    async with ops_hub(make_settings(kafka, db_url, unique)) as (hub, client):
        assert hub.store is not None
        anon = _anonymous(client, "10.0.0.7")
        with structlog.testing.capture_logs() as logs:
            assert (
                await anon.post("/ops/login", json={"username": "olga", "password": "Sesame-1"})
            ).status_code == 401
            typo = {"username": "Sesame-2", "password": "x"}  # a password typed in the name field
            assert (await anon.post("/ops/login", json=typo)).status_code == 401
            assert (
                await anon.post("/ops/login", json={"username": "olga", "password": PASSWORD})
            ).status_code == 200
            assert (await anon.post("/ops/logout")).status_code == 303
        failed = [e for e in logs if e["event"] == "operator login failed"]
        assert [(e["operator"], e["reason"], e["address"]) for e in failed] == [
            ("olga", "wrong password", "10.0.0.7"),
            (None, "unknown user", "10.0.0.7"),
        ]
        rows = await _audit_rows(hub.store)
        mine = [(a, u, o.get("reason")) for a, u, o in rows if o.get("address") == "10.0.0.7"]
        assert mine == [
            ("operator.login_failed", "olga", "wrong password"),
            ("operator.login_failed", "anonymous", "unknown user"),
            ("operator.logged_in", "olga", None),
            ("operator.logged_out", "olga", None),
        ]
        for secret in ("Sesame-1", "Sesame-2", PASSWORD):
            assert secret not in repr(logs) and secret not in repr(rows)


def _set_cookie(response: httpx.Response) -> str:
    return next(v for k, v in response.headers.multi_items() if k == "set-cookie")


async def test_the_session_cookie_is_secure_unless_the_hub_is_only_on_this_machine(
    kafka: EmbeddedKafka, tmp_path: Path, unique: str
) -> None:
    """Secure followed the request's scheme, which is http behind a proxy that ends TLS."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    login = {"username": "olga", "password": PASSWORD}
    async with ops_hub(make_settings(kafka, db, unique)) as (_, client):  # listens on 127.0.0.1
        anon = _anonymous(client)
        assert "secure" not in _set_cookie(await anon.post("/ops/login", json=login)).lower()
        proxied = await anon.post("/ops/login", json=login, headers={"X-Forwarded-Proto": "https"})
        assert "; secure" in _set_cookie(proxied).lower()
    public = make_settings(kafka, db, unique, http={"host": "0.0.0.0"})
    async with ops_hub(public) as (_, client):  # behind an ingress: plain http inside
        response = await _anonymous(client).post("/ops/login", json=login)
        assert response.status_code == 200 and "; secure" in _set_cookie(response).lower()
    trial = make_settings(kafka, db, unique, http={"host": "0.0.0.0", "secure_cookies": False})
    async with ops_hub(trial) as (_, client):
        assert "secure" not in _set_cookie(await _anonymous(client).post("/ops/login", json=login)).lower()


async def test_requests_from_another_site_are_refused(
    kafka: EmbeddedKafka, tmp_path: Path, unique: str
) -> None:
    """A cross-site form logged in (303 and a cookie), and the console took a form or text body."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    login = {"username": "olga", "password": PASSWORD}
    evil = {"Origin": "https://evil.example"}
    async with ops_hub(make_settings(kafka, db, unique)) as (_, client):
        anon = _anonymous(client)
        form = await anon.post("/ops/login", data=login, headers=evil)
        assert form.status_code == 403 and "set-cookie" not in form.headers
        assert form.headers["content-type"] == "application/problem+json"
        assert "another site" in form.json()["detail"]
        for headers in (
            {"Referer": "https://evil.example/page"},
            {"Origin": "null"},
            {"Origin": "http://hub.evil.example"},
            {"Origin": "null", "Referer": "https://evil.example/page"},
            {"Origin": "http://hub:8000", "Host": "hub:8443"},
        ):
            assert (await anon.post("/ops/login", json=login, headers=headers)).status_code == 403, headers
        # the console's own pages, and a proxy that says which host the browser asked for
        assert (
            await anon.post("/ops/login", data=login, headers={"Origin": "http://hub"})
        ).status_code == 303
        behind = {"Origin": "https://hub.example", "X-Forwarded-Host": "hub.example"}
        assert (await anon.post("/ops/login", json=login, headers=behind)).status_code == 200
        # a proxy on another port that passes the host name only (nginx's $host): the same site
        on_a_port = {"Origin": "https://hub.example:8443", "X-Forwarded-Host": "hub.example"}
        assert (await anon.post("/ops/login", json=login, headers=on_a_port)).status_code == 200
        # "null" from a browser's own form under a strict referrer policy, its Referer this site
        own_form = {"Origin": "null", "Referer": "http://hub/ops/login"}
        assert (await anon.post("/ops/login", data=login, headers=own_form)).status_code == 303

        letter = "/ops/api/dlq/nothing:0:0/replay"
        assert (await client.post(letter, headers=evil)).status_code == 403
        as_form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://hub"}
        assert (await client.post(letter, content=b"", headers=as_form)).status_code == 415
        text = {"Content-Type": "text/plain"}
        assert (await client.post(letter, content=b"{}", headers=text)).status_code == 415
        assert (await client.post(letter)).status_code not in (403, 415)  # a script, no Origin: as before
        csv = "Medewerkernummer;Naam;E-mail;Team\n"
        imported = await client.post("/api/v1/medewerkers/import", content=csv, headers=text)
        assert imported.status_code == 415 and imported.headers["fsc-transaction-id"]
        crossed = await client.post(
            "/api/v1/medewerkers/import", content=csv, headers={"Content-Type": "text/csv", **evil}
        )
        assert crossed.status_code == 403
        assert (await client.post("/ops/logout", headers=evil)).status_code == 403
        assert (await client.get("/ops/api/me")).status_code == 200  # still logged in
        assert (await client.post("/ops/logout", headers={"Origin": "http://hub"})).status_code == 303
        assert (await client.get("/ops/api/me")).status_code == 401


async def test_every_console_and_api_answer_carries_the_security_headers(
    kafka: EmbeddedKafka, tmp_path: Path, unique: str
) -> None:
    async with ops_hub(make_settings(kafka, f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", unique)) as (
        _,
        client,
    ):
        anon = _anonymous(client)
        answers = {
            "console api": await client.get("/ops/api/me"),
            "anonymous api": await anon.get("/ops/api/me"),
            "dashboard": await client.get("/ops/"),
            "login page": await anon.get("/ops/login"),
            "script": await anon.get("/ops/static/dashboard.js"),
            "partner api": await anon.get("/api/v1/medewerkers"),
            "refused": await anon.post("/ops/login", json={}, headers={"Origin": "https://evil.example"}),
        }
        for name, r in answers.items():
            assert r.headers["x-content-type-options"] == "nosniff", name
            assert r.headers["x-frame-options"] == "DENY", name
            assert r.headers["referrer-policy"] == "same-origin", name
            policy = r.headers["content-security-policy"]
            assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, name
            assert "unsafe-inline" not in policy, name
            assert (r.headers.get("cache-control") == "no-store") is (name != "script"), name
        # the login page's one inline script is allowed by its hash, and no other
        login_policy = answers["login page"].headers["content-security-policy"]
        script = answers["login page"].text.split("<script>")[1].split("</script>")[0]
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"script-src 'self' 'sha256-{digest}'" in login_policy
        assert answers["dashboard"].text.count("<script") == answers["dashboard"].text.count("<script src=")


async def test_a_password_reset_during_a_login_with_the_old_one_keeps_that_login_out(
    kafka: EmbeddedKafka, db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old password was checked (about 150 ms), the reset ended every session meanwhile, and the
    login then made a new one with the old password, which outlived the reset."""
    checking, release = threading.Event(), threading.Event()

    class _Slow(_Recording):
        def verify(self, hashed: str, password: str) -> bool:
            checking.set()
            release.wait(30)
            return super().verify(hashed, password)

    async with ops_hub(make_settings(kafka, db_url, unique)) as (hub, client):
        assert hub.store is not None
        monkeypatch.setattr(auth, "_hasher", _Slow(auth._hasher))
        old = asyncio.create_task(
            _anonymous(client).post("/ops/login", json={"username": "olga", "password": PASSWORD})
        )
        await asyncio.to_thread(checking.wait, 30)  # the old password is being checked
        await add_operator(hub.store, "olga", "a-new-password-1", "operator")  # reset: sessions end
        release.set()
        answer = await old
        assert answer.status_code == 401 and auth.COOKIE not in answer.cookies, answer.text
        async with hub.store.connect() as conn:
            sessions = (await conn.execute(select(func.count()).select_from(operator_sessions))).scalar_one()
        assert sessions == 0
