"""The dashboard in real Chromium: log in, see a known lag, open a dead letter, replay it, see it done;
the embedded SMTP sink's mails and the problems an administrator must fix."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
import uvicorn
from aiokafka import TopicPartition
from sqlalchemy import func, select

from connectors.mail.component import mail_component
from connectors.mail.sink import stored_mails
from connectors.verwijsindex.component import verwijsindex_component
from hub.app import create_app
from hub.audit import audit_row, write_audits
from hub.clock import today
from hub.config import Settings
from hub.embedded import EmbeddedKafka, free_port
from hub.notify.borging import NO_DELEGATE, check_borging
from hub.notify.component import register_notify
from hub.ops import console
from hub.ops.auth import add_operator
from hub.runtime import Hub, Registrar
from hub.store.tables import audit_log
from hub.topics import Topic
from schemas.caseworker import Absence, Caseworker, ContactDetails, Team
from schemas.envelope import Envelope, utcnow
from tests.conftest import make_settings
from tests.helpers.kafka import produce, read_topic, wait_for
from tests.integration.test_mail_delivery import FAST, ILSE, OMAR, add_caseworkers, queue_notices
from tests.integration.test_notify_match import signal_with_match, youth
from tests.integration.test_ops_dlq import youth_key
from tests.integration.test_ops_lag import (
    OPS_TOPICS,
    OUT,
    PASSWORD,
    Cure,
    _commit,
    _fill,
    poisonable_echo,
    refusing_address,
)

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
IDLE = Topic("ops.idle.v1", partitions=1)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _playwright() -> Any:
    """playwright is a dev dependency: missing, the environment is broken (a failure, as a missing
    Chromium is, not a skip that CI would pass)."""
    try:
        import playwright.async_api as api
    except ImportError as exc:
        pytest.fail(f"playwright is not installed ({exc}): `make test` installs it with the dev extras")
    return api


@pytest.fixture
async def served(kafka: EmbeddedKafka, tmp_path: object, unique: str) -> AsyncIterator[tuple[Hub, str, Cure]]:
    """The hub's app under uvicorn on a free port, with the console and a switchable poison check."""
    cure = Cure()
    settings = make_settings(kafka, f"sqlite+aiosqlite:///{tmp_path}/hub.db", unique, components=["intake"])
    async with _serving(settings, [console.register, poisonable_echo(cure)]) as (hub, base):
        yield hub, base, cure


@pytest.fixture
async def served_with_connectors(
    kafka: EmbeddedKafka, tmp_path: object, unique: str
) -> AsyncIterator[tuple[Hub, str]]:
    """As `served`, with the mail connector (its embedded SMTP sink) and a Verwijsindex that refuses."""
    with refusing_address() as refused:
        settings = make_settings(
            kafka,
            f"sqlite+aiosqlite:///{tmp_path}/hub.db",
            unique,
            components=["intake"],
            verwijsindex={"url": f"http://{refused}", "poll_interval_s": 1, "timeout_s": 1},
        )
        registrars = [console.register, mail_component(FAST), verwijsindex_component(FAST)]
        async with _serving(settings, registrars) as served:
            yield served


@pytest.fixture
async def served_with_mail(
    kafka: EmbeddedKafka, tmp_path: object, unique: str
) -> AsyncIterator[tuple[Hub, str]]:
    """As `served`, with the mail connector (its embedded SMTP sink) and the match notifier."""
    settings = make_settings(kafka, f"sqlite+aiosqlite:///{tmp_path}/hub.db", unique, components=["intake"])
    async with _serving(settings, [console.register, mail_component(FAST), register_notify]) as served:
        yield served


@pytest.fixture
async def served_with_smtp_server(
    kafka: EmbeddedKafka, tmp_path: object, unique: str
) -> AsyncIterator[tuple[Hub, str]]:
    """As `served`, with a real SMTP server configured: the hub keeps no mails then."""
    settings = make_settings(
        kafka,
        f"sqlite+aiosqlite:///{tmp_path}/hub.db",
        unique,
        components=["intake"],
        smtp={"host": "127.0.0.1", "port": free_port()},
    )
    async with _serving(settings, [console.register]) as served:
        yield served


@asynccontextmanager
async def _chromium() -> AsyncIterator[Any]:
    """A headless Chromium with a fresh profile."""
    playwright = _playwright()
    if not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium missing at {CHROMIUM}: apt-get install -y chromium")
    async with playwright.async_playwright() as pw:
        with tempfile.TemporaryDirectory() as profile:
            browser = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=FLAGS, headless=True
            )
            try:
                yield browser
            finally:
                await browser.close()


async def _log_in(browser: Any, base: str, username: str) -> Any:
    """A page of the dashboard, logged in as `username`."""
    page = await browser.new_page()
    page.set_default_timeout(60_000)
    await page.goto(base + "/ops/login")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("#submit")
    await page.wait_for_url(base + "/ops/")
    return page


async def _refreshed(page: Any, times: int = 1) -> None:
    """Wait until the dashboard refreshed `times` more times."""
    for _ in range(times):
        before = await page.inner_text("#updated")
        await page.wait_for_function(
            "before => document.getElementById('updated').textContent !== before", arg=before
        )


@asynccontextmanager
async def _serving(settings: Settings, registrars: list[Registrar]) -> AsyncIterator[tuple[Hub, str]]:
    """The hub with these registrars under uvicorn on a free port; its base URL. Operators olga, pien."""
    hub = Hub(settings, registrars={"intake": registrars}, extra_topics=[*OPS_TOPICS, IDLE])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, hub=hub), host="127.0.0.1", port=port, log_config=None, lifespan="on"
        )
    )
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started, timeout_s=30)
    assert hub.store is not None
    await add_operator(hub.store, "olga", PASSWORD, "operator")
    await add_operator(hub.store, "pien", PASSWORD, "privacy_officer")
    try:
        yield hub, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def test_login_see_lag_replay_a_dead_letter(
    kafka: EmbeddedKafka, served: tuple[Hub, str, Cure]
) -> None:
    playwright = _playwright()
    if not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium missing at {CHROMIUM}: apt-get install -y chromium")
    hub, base, cure = served
    idle, slow = hub.topic(IDLE.name), hub.group("slow")
    await _fill(kafka.bootstrap, idle, {0: 7})
    await _commit(kafka.bootstrap, slow, {TopicPartition(idle, 0): 2})  # known lag: 5
    poison = Envelope(type="T", payload={"n": 42, "poison": True})
    await produce(kafka.bootstrap, hub.topic("ops.in.v1"), [(b"key-p", poison.to_bytes(), poison.headers())])
    dlq_topic = hub.topic("ops.in.dlq.v1")

    async with playwright.async_playwright() as pw:
        with tempfile.TemporaryDirectory() as profile:
            browser = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=FLAGS, headless=True
            )  # the profile directory is Chromium's --user-data-dir
            try:
                page = await browser.new_page()
                # Generous: the waits below include the lag sampling cache and the dashboard's refresh,
                # both slower on a loaded machine.
                page.set_default_timeout(60_000)
                await page.goto(base + "/ops/")
                assert page.url.endswith("/ops/login")  # anonymous: sent to the login page
                await page.fill("#username", "olga")
                await page.fill("#password", PASSWORD)
                await page.click("#submit")
                await page.wait_for_url(base + "/ops/")
                lag_row = page.locator(f'#groups tr[data-group="{slow}"][data-topic="{idle}"]')
                await lag_row.locator("td:nth-child(4)", has_text="5").wait_for()
                depth = page.locator(f'#topics tr[data-topic="{dlq_topic}"] td.dlq-depth')
                await depth.filter(has_text="1").wait_for()
                await page.locator("#dlq tbody tr button.show").first.click()
                await page.locator("#letter-headers", has_text="dlq-exception-message").wait_for()
                assert "poison payload" in await page.inner_text("#letter-headers")
                await _searched_once_by_the_senders_key(browser, base, hub)
                cure.fixed = True  # the cause is fixed; now replay
                await page.click("#replay-one")
                await depth.filter(has_text="0").wait_for()
            finally:
                await browser.close()
    out = await read_topic(kafka.bootstrap, hub.topic(OUT.name), expect=1, settle_s=0.3)
    assert [Envelope.from_bytes(r.value).payload["n"] for r in out] == [42]


async def test_connectors_show_their_last_success_and_last_error(
    served_with_connectors: tuple[Hub, str],
) -> None:
    """The dashboard read last_success and last_error where the mail connector said lastSuccess and
    lastError, and the Verwijsindex connector said nothing: both columns stayed empty."""
    playwright = _playwright()
    if not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium missing at {CHROMIUM}: apt-get install -y chromium")
    hub, base = served_with_connectors
    mail = hub.components["mail"]
    mail.sink.refuse["omar@halt.nl"] = "550 5.1.1 mailbox unavailable"
    await add_caseworkers(hub, ILSE, OMAR)
    await queue_notices(hub, 1, caseworker="cw-ilse")
    await wait_for(lambda: mail.last_success is not None, timeout_s=30)
    await queue_notices(hub, 1, caseworker="cw-omar")  # refused for good: its dead letter

    async with playwright.async_playwright() as pw:
        with tempfile.TemporaryDirectory() as profile:
            browser = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=FLAGS, headless=True
            )
            try:
                page = await browser.new_page()
                page.set_default_timeout(60_000)
                await page.goto(base + "/ops/login")
                await page.fill("#username", "olga")
                await page.fill("#password", PASSWORD)
                await page.click("#submit")
                await page.wait_for_url(base + "/ops/")
                row = page.locator('#connectors tr[data-name="mail"]')
                sent_at = mail.last_success.isoformat()
                await row.locator("td:nth-child(3)", has_text=sent_at).wait_for()
                await row.locator("td:nth-child(4)", has_text="550").wait_for()
                index = page.locator('#connectors tr[data-name="verwijsindex"]')
                await index.locator("td:nth-child(4)", has_text="match feed: ").wait_for()
            finally:
                await browser.close()


# Partner and caseworker data is text: shown as markup, these would put elements on the page.
KEES_MARKUP = ContactDetails(
    name="Kees <i>de Wit</i>", organisation="Jeugdhulp Haaglanden", email="kees@jeugdhulp.nl",
    phone="06 1234 5678",
)  # fmt: skip
LOTTE = Caseworker(
    caseworker_id="cw-lotte", name="Lotte <b>Vos</b>", email="lotte@halt.nl", phone="070 765 4321",
    team=Team.DEN_HAAG, meldingsbevoegd=True,
)  # fmt: skip


async def _sink_reads(hub: Hub) -> list[Any]:
    assert hub.store is not None
    async with hub.store.connect() as conn:
        q = select(audit_log).where(audit_log.c.action == "mail.sink_read").order_by(audit_log.c.id)
        return list(await conn.execute(q))


async def test_sink_mails_and_borging_problems_show_as_text(served_with_mail: tuple[Hub, str]) -> None:
    """A viewer sees the sink's match mails newest first and reads one as text (audited, once per
    view, not at every refresh), and sees a caseworker away without a delegate: listed as unreachable
    now and as the borging problem it caused, with what to do. Names stay text, never markup."""
    hub, base = served_with_mail
    assert hub.store is not None
    store = hub.store
    await add_operator(store, "vera", PASSWORD, "viewer")
    await add_caseworkers(hub, ILSE, OMAR, LOTTE)
    await signal_with_match(hub, "cw-ilse", youth(723_456_700), counterpart=KEES_MARKUP)

    async def mails_stored(n: int) -> bool:
        return len(await stored_mails(store)) == n

    await wait_for(lambda: mails_stored(1), timeout_s=30)
    await signal_with_match(hub, "cw-lotte", youth(823_456_700))  # Lotte's signal, for borging below
    await wait_for(lambda: mails_stored(2), timeout_s=30)
    newest, older = await stored_mails(store)
    assert (newest.rcpt_to, older.rcpt_to) == (["lotte@halt.nl"], ["ilse@halt.nl"])
    away = today() - timedelta(days=20), today() + timedelta(days=10)
    await add_caseworkers(hub, LOTTE.model_copy(update={"absences": [Absence(start=away[0], end=away[1])]}))
    rounds = {r.caseworker_id: r for r in await check_borging(hub)}  # the daily round, now
    assert rounds["cw-lotte"].problem and not rounds["cw-lotte"].signal_ids

    async with _chromium() as browser:
        page = await _log_in(browser, base, "vera")
        mails = page.locator("#mails tbody tr")
        await page.locator(f'#mails tr[data-id="{older.id}"]').wait_for()
        assert await mails.evaluate_all("rows => rows.map(r => r.dataset.id)") == [
            str(newest.id),
            str(older.id),
        ]  # newest first
        first = mails.first
        assert await first.locator("td:nth-child(1)").inner_text() == newest.received_at.isoformat()
        assert await first.locator("td:nth-child(2)").inner_text() == "lotte@halt.nl"
        assert (await first.locator("td:nth-child(3)").inner_text()).startswith("Match in de Verwijsindex")
        await page.locator(f'#mails tr[data-id="{older.id}"] button.show').click()
        shown = page.locator("#mail-text")
        await shown.filter(has_text="Kees <i>de Wit</i>: Jeugdhulp Haaglanden, kees@jeugdhulp.nl").wait_for()
        assert await page.locator("#mail i").count() == 0  # the counterpart's name stayed text
        assert "Content-Type" not in await shown.inner_text()  # the text, not the raw message
        assert await page.locator("#mail-raw").is_hidden()
        assert "ilse@halt.nl" in await page.inner_text("#mail-headers")
        await _refreshed(page, 2)
        [read] = await _sink_reads(hub)  # the view, not the list read at every refresh
        assert (read.user, read.objects["mail_ids"], read.objects["raw"]) == ("vera", [older.id], False)
        await page.check("#mail-raw-toggle")
        await page.locator("#mail-raw", has_text="Content-Type: multipart/alternative").wait_for()
        assert [r.objects["raw"] for r in await _sink_reads(hub)] == [False, True]
        # the mail last asked for is shown, though one asked for before it is answered after it
        await _second_asked_first_answered(
            page, "/api/v1/mails/", "#mails", str(newest.id), str(older.id), shown="#mail-id"
        )
        assert await page.inner_text("#mail-id") == str(older.id)

        lotte = page.locator('#unreachable tr[data-id="cw-lotte"]')
        await lotte.wait_for()
        assert await lotte.locator("td:nth-child(2)").inner_text() == "Lotte <b>Vos</b>"
        assert await page.locator("#unreachable b").count() == 0
        assert await lotte.locator("td:nth-child(3)").inner_text() == "absent"
        assert "delegate" in await lotte.locator("td:nth-child(4)").inner_text()
        problem = page.locator(f'#problems tr[data-kind="{NO_DELEGATE}"][data-caseworker="cw-lotte"]')
        await problem.wait_for()
        assert (await problem.locator("td:nth-child(5)").inner_text()).startswith("borging niet mogelijk")
        assert "Set a reachable delegate" in await problem.locator("td:nth-child(6)").inner_text()
        assert await page.locator("#unreachable tbody tr").count() == 1  # Ilse and Omar are present


async def test_mails_section_is_hidden_when_a_real_smtp_server_is_configured(
    served_with_smtp_server: tuple[Hub, str],
) -> None:
    """With a real SMTP server the hub keeps no mails (404): the dashboard hides the section, asks once,
    and the rest of the dashboard keeps refreshing."""
    _, base = served_with_smtp_server
    async with _chromium() as browser:
        page = await browser.new_page()
        page.set_default_timeout(60_000)
        asked: list[int] = []
        page.on("response", lambda r: asked.append(r.status) if "/api/v1/mails" in r.url else None)
        await page.goto(base + "/ops/login")
        await page.fill("#username", "olga")
        await page.fill("#password", PASSWORD)
        await page.click("#submit")
        await page.wait_for_url(base + "/ops/")
        await page.locator("#problems-section").wait_for()
        await _refreshed(page, 2)
        assert asked == [404]
        assert await page.locator("#mails-section").is_hidden()
        assert (await page.inner_text("#updated")).startswith("updated ")  # no refresh failed


async def _searched_once_by_the_senders_key(browser: Any, base: str, hub: Hub) -> None:
    """A privacy officer looks for the letter by its sender's own key (a BSN, it may be): one audited
    search, not one more at every refresh of the dashboard, and the key in no URL the page asks for
    (proxies and browsers keep URLs)."""
    page = await browser.new_page()
    page.set_default_timeout(60_000)
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    await page.goto(base + "/ops/login")
    await page.fill("#username", "pien")
    await page.fill("#password", PASSWORD)
    await page.click("#submit")
    await page.wait_for_url(base + "/ops/")
    await page.fill("#f-key", "key-p")
    await page.click("#f-apply")
    await page.locator("#dlq tbody tr button.show").first.wait_for()  # found: the one letter
    for _ in range(2):  # two refreshes of the dashboard after the search
        before = await page.inner_text("#updated")
        await page.wait_for_function(
            "before => document.getElementById('updated').textContent !== before", arg=before
        )
    assert hub.store is not None
    async with hub.store.connect() as conn:
        searches = await conn.execute(
            select(func.count()).select_from(audit_log).where(audit_log.c.action == "dlq.searched_by_key")
        )
        assert searches.scalar_one() == 1
    assert urls and not [u for u in urls if "key-p" in u]
    await page.close()


async def test_an_operator_resolves_a_problem_with_a_reason_and_it_shows_among_the_resolved(
    served: tuple[Hub, str, Cure],
) -> None:
    """Open problems only, by default; an operator resolves one with what was done (asked in a dialog),
    it leaves the list and shows, with who and why, once resolved ones are asked for too. A viewer
    has no button to resolve with."""
    from hub.notify.problems import record_problem

    hub, base, _ = served
    assert hub.store is not None
    await add_operator(hub.store, "vera", PASSWORD, "viewer")
    async with hub.store.transaction() as session:
        problem_id = await record_problem(
            session, kind="match_overgeslagen", caseworker_id="cw-ilse", reference="m-1",
            reason="match overgeslagen op positie 1: type ontbreekt", transaction_id=None,
        )  # fmt: skip
    shown = f'#problems tr[data-id="{problem_id}"]'
    async with _chromium() as browser:
        page = await _log_in(browser, base, "vera")
        await page.locator(shown).wait_for()
        assert await page.locator(f"{shown} button.resolve").count() == 0
        await page.close()

        page = await _log_in(browser, base, "olga")  # the one browser profile: olga's session now
        asked: list[str] = []

        async def answer(dialog: Any) -> None:
            asked.append(dialog.message)
            await dialog.accept("gemeld bij de Verwijsindex")

        page.once("dialog", answer)
        await page.locator(f"{shown} button.resolve").click()
        await page.locator("#problems-status", has_text=f"problem {problem_id} resolved").wait_for()
        await page.locator(shown).wait_for(state="detached")  # open ones only
        assert asked and "no BSN" in asked[0]
        await page.check("#problems-resolved-toggle")
        resolved = page.locator(f'{shown}[data-status="resolved"]')
        await resolved.wait_for()
        assert (await resolved.locator("td:nth-child(7)").inner_text()).endswith(
            "by olga (operator): gemeld bij de Verwijsindex"
        )
        assert await resolved.locator("button.resolve").count() == 0
    async with hub.store.connect() as conn:
        audited = await conn.execute(
            select(func.count()).select_from(audit_log).where(audit_log.c.action == "problem.resolved")
        )
        assert audited.scalar_one() == 1


async def test_a_filter_slower_than_a_refresh_stays_applied(
    kafka: EmbeddedKafka, served: tuple[Hub, str, Cure]
) -> None:
    """A refresh that began while the operator's filter was still on its way asked with the old
    filter; its answer came after the filter's and was drawn over it, and the filter was lost for
    good: the list showed every dead letter again, and "Replay these" would have replayed them all.
    A filter that fails says so, rather than leaving the list as it was."""
    hub, base, _ = served
    ann, bob = youth_key("ann"), youth_key("bob")
    sent = [(k, Envelope(type="T", payload={"n": i, "poison": True})) for i, k in enumerate([ann, ann, bob])]
    await produce(
        kafka.bootstrap, hub.topic("ops.in.v1"), [(k.encode(), e.to_bytes(), e.headers()) for k, e in sent]
    )
    dlq_topic = hub.topic("ops.in.dlq.v1")
    async with _chromium() as browser:
        page = await _log_in(browser, base, "olga")
        await (
            page.locator(f'#topics tr[data-topic="{dlq_topic}"] td.dlq-depth').filter(has_text="3").wait_for()
        )
        await page.wait_for_function("() => document.querySelectorAll('#dlq tbody tr').length === 3")

        answered_after = asyncio.Event()
        held: list[Any] = []

        async def slow(route: Any) -> None:  # the filter's list comes after a refresh's, begun later
            if held or "key=" not in route.request.url:
                await route.continue_()
                return
            held.append(route)
            await answered_after.wait()
            await route.continue_()

        def seen(response: Any) -> None:
            if held and "/ops/api/dlq?" in response.url and response.request is not held[0].request:
                answered_after.set()

        page.on("response", seen)
        await page.route("**/ops/api/dlq?*", slow)
        await page.fill("#f-key", ann)
        await page.click("#f-apply")
        await wait_for(answered_after.is_set, timeout_s=30)  # a refresh began and was answered meanwhile
        await page.wait_for_function("() => document.querySelectorAll('#dlq tbody tr').length === 2")
        await _refreshed(page, 2)
        assert await page.locator("#dlq tbody tr").count() == 2
        await page.unroute("**/ops/api/dlq?*")

        async def failing(route: Any) -> None:
            await route.fulfill(status=503, content_type="application/problem+json",
                                body='{"title": "De hub start nog", "status": 503}')  # fmt: skip

        await page.route("**/ops/api/dlq?*key=*", failing)
        await page.fill("#f-key", bob)
        await page.click("#f-apply")
        await page.wait_for_function(
            "() => document.getElementById('dlq-error').textContent.includes('De hub start nog')"
        )


async def _two_dead_letters(kafka: EmbeddedKafka, hub: Hub, **payload: Any) -> None:
    """Two poison records of two youths on the ops topic: two dead letters (with `payload` added)."""
    sent = [Envelope(type="T", payload={"n": i, "poison": True, **payload}) for i in range(2)]
    records = [(youth_key(f"y{i}").encode(), e.to_bytes(), e.headers()) for i, e in enumerate(sent)]
    await produce(kafka.bootstrap, hub.topic("ops.in.v1"), records)


async def _listed_two(page: Any) -> list[str]:
    """The ids of the two dead letters, once the page lists them."""
    await page.wait_for_function("() => document.querySelectorAll('#dlq tbody tr').length === 2")
    return [str(await tr.get_attribute("data-id")) for tr in await page.locator("#dlq tbody tr").all()]


async def _second_asked_first_answered(
    page: Any, api: str, table: str, first: str, second: str, *, shown: str
) -> None:
    """Open `first` (its answer held back), then `second` from `table`; once `second` is shown, let
    `first`'s answer come and wait until the page handled it. The caller checks what is shown."""
    path = api + quote(first, safe="")  # as the page asks for it
    release, held = asyncio.Event(), asyncio.Event()

    async def slow(route: Any) -> None:
        held.set()
        await release.wait()
        await route.continue_()

    def asks(url: str) -> bool:
        return url.split("?")[0].endswith(path)

    await page.route(asks, slow)
    await page.locator(f'{table} tr[data-id="{first}"] button.show').click()
    await wait_for(held.is_set, timeout_s=30)
    await page.locator(f'{table} tr[data-id="{second}"] button.show').click()
    await page.locator(shown).filter(has_text=second).wait_for()
    async with page.expect_event("requestfinished", lambda r: asks(r.url)):
        release.set()
    await page.evaluate("() => fetch('/ops/api/me').then((r) => r.json())")  # its answer handled
    await page.unroute(asks)


async def test_the_letter_shown_is_the_last_one_asked_for_however_the_answers_come(
    kafka: EmbeddedKafka, served: tuple[Hub, str, Cure]
) -> None:
    """An operator who opened one dead letter and then another, while the first was slow to come,
    was shown the first: its answer came last and was drawn over the second, and "Discard" and
    "Replay" act on the letter shown. The letter last asked for is the one shown."""
    hub, base, _ = served
    await _two_dead_letters(kafka, hub)
    async with _chromium() as browser:
        page = await _log_in(browser, base, "olga")
        first, second = await _listed_two(page)
        await _second_asked_first_answered(
            page, "/ops/api/dlq/", "#dlq", str(first), str(second), shown="#letter-id"
        )
        assert await page.inner_text("#letter-id") == second

        # what the operator does with the letter shown says how it went, refused or not
        status = page.locator("#letter-status")
        await page.click("#discard-one")  # no reason given
        await status.filter(has_text="not discarded").wait_for()
        assert "reason" in await status.inner_text()
        await page.fill("#discard-reason", "test letters, not a partner's")
        await page.click("#discard-one")
        await status.filter(has_text="discarded").filter(has_not_text="not").wait_for()
        await page.click("#replay-one")
        await status.filter(has_text="not replayed").wait_for()
        assert "already replayed or discarded" in await status.inner_text()


async def test_the_timeline_shows_the_id_last_searched_and_says_why_a_search_was_refused(
    served: tuple[Hub, str, Cure],
) -> None:
    """The timeline's search threw away what the hub said when it refused a search (too short an id):
    nothing happened on the page. And a search answered after a later one was drawn over it."""
    hub, base, _ = served
    assert hub.store is not None
    async with hub.store.transaction() as session:
        await write_audits(
            session,
            [
                audit_row(action, "ilse", at=utcnow(), system="test", transaction_id=tx, objects={})
                for tx, action in (("tx-ann-1", "referral.received"), ("tx-bob-2", "referral.decided"))
            ],
        )
    async with _chromium() as browser:
        page = await _log_in(browser, base, "olga")
        await page.fill("#t-id", "ab")
        await page.click("#t-find")
        await page.locator("#t-status").filter(has_text="not searched").wait_for()
        assert "at least 3" in await page.inner_text("#t-status")

        release, held = asyncio.Event(), asyncio.Event()

        def asks(url: str) -> bool:
            return "/ops/api/timeline?id=tx-ann-1" in url

        async def slow(route: Any) -> None:  # the first search is answered after the second
            held.set()
            await release.wait()
            await route.continue_()

        await page.route(asks, slow)
        await page.fill("#t-id", "tx-ann-1")
        await page.click("#t-find")
        await wait_for(held.is_set, timeout_s=30)
        await page.fill("#t-id", "tx-bob-2")
        await page.click("#t-find")
        await page.locator("#timeline li").filter(has_text="referral.decided").wait_for()
        async with page.expect_event("requestfinished", lambda r: asks(r.url)):
            release.set()
        await page.evaluate("() => fetch('/ops/api/me').then((r) => r.json())")  # its answer handled
        [shown] = await page.locator("#timeline li").all_inner_texts()
        assert "referral.decided" in shown
        assert "1 event(s) for tx-bob-2" in await page.inner_text("#t-status")


async def test_personal_data_is_shown_for_the_letter_it_was_asked_for_and_goes_at_once_when_unticked(
    kafka: EmbeddedKafka, served: tuple[Hub, str, Cure]
) -> None:
    """Unticking "show personal data" left it on the page until the masked copy came, and for good
    when that failed; the box stayed ticked for the next letter opened, which came unmasked (an
    audited disclosure nobody meant). Personal data goes off the page at once, and another letter
    opens masked."""
    hub, base, _ = served
    name = "Jansen"
    await _two_dead_letters(kafka, hub, surname=name)
    async with _chromium() as browser:
        page = await _log_in(browser, base, "pien")
        first, second = await _listed_two(page)
        payload = page.locator("#letter-payload")
        await page.locator(f'#dlq tr[data-id="{first}"] button.show').click()
        await page.locator("#letter-id").filter(has_text=str(first)).wait_for()
        assert name not in await payload.inner_text()  # masked
        await page.check("#unmask")
        await payload.filter(has_text=name).wait_for()

        async def failing(route: Any) -> None:  # the masked copy cannot be had
            await route.fulfill(status=503, content_type="application/problem+json",
                                body='{"title": "De hub start nog", "status": 503}')  # fmt: skip

        await page.route(lambda url: "/ops/api/dlq/" in url and "unmask" not in url, failing)
        await page.uncheck("#unmask")
        await page.locator("#letter-error").filter(has_text="De hub start nog").wait_for()
        assert name not in await payload.inner_text()  # gone at once, though its masked copy failed
        assert name not in await page.inner_text("#letter-headers")
        await page.unroute_all()

        await page.check("#unmask")
        await payload.filter(has_text=name).wait_for()
        await page.locator(f'#dlq tr[data-id="{second}"] button.show').click()  # another letter
        await page.locator("#letter-id").filter(has_text=str(second)).wait_for()
        assert not await page.is_checked("#unmask")
        assert name not in await payload.inner_text()


async def test_a_section_that_cannot_be_refreshed_leaves_the_others_fresh(
    served: tuple[Hub, str, Cure],
) -> None:
    """The dashboard refreshed its sections one after another in one try: when health failed (the
    broker down), connectors, problems, mails and dead letters were not asked again for as long, and
    the connectors' table went on saying the broker was reachable. Each section is refreshed on its
    own, and the page says which one failed."""
    _, base, _ = served
    async with _chromium() as browser:
        page = await _log_in(browser, base, "olga")
        await _refreshed(page)
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if "/ops/api/connectors" in r.url else None)

        async def down(route: Any) -> None:
            await route.fulfill(status=503, content_type="application/problem+json",
                                body='{"title": "Kafka onbereikbaar", "status": 503}')  # fmt: skip

        await page.route("**/ops/api/health", down)
        await page.locator("#updated").filter(has_text="health: Kafka onbereikbaar").wait_for()
        before = len(asked)
        await _refreshed(page, 2)
        assert len(asked) >= before + 2, asked  # the connectors were asked again meanwhile
        assert "health: Kafka onbereikbaar" in await page.inner_text("#updated")
        assert "connectors" not in await page.inner_text("#updated")


async def test_replay_these_replays_the_filter_of_the_list_shown_once_its_count_is_confirmed(
    kafka: EmbeddedKafka, served: tuple[Hub, str, Cure]
) -> None:
    """ "Replay these" read the boxes as typed since, not the filter of the list shown, and with the
    boxes empty replayed every open dead letter without asking. A poll of the job's progress that
    failed stopped the progress for good; now it is tried again."""
    hub, base, cure = served
    ann, bob = youth_key("ann"), youth_key("bob")
    sent = [(k, Envelope(type="T", payload={"n": i, "poison": True})) for i, k in enumerate([ann, ann, bob])]
    records = [(k.encode(), e.to_bytes(), e.headers()) for k, e in sent]
    await produce(kafka.bootstrap, hub.topic("ops.in.v1"), records)
    dlq_topic = hub.topic("ops.in.dlq.v1")
    async with _chromium() as browser:
        page = await _log_in(browser, base, "olga")
        depth = page.locator(f'#topics tr[data-topic="{dlq_topic}"] td.dlq-depth')
        await depth.filter(has_text="3").wait_for()
        await page.fill("#f-key", ann)
        await page.click("#f-apply")
        await page.wait_for_function("() => document.querySelectorAll('#dlq tbody tr').length === 2")
        await page.fill("#f-key", "")  # typed since, not applied: the list still shows Ann's two
        await _refreshed(page)
        assert await page.locator("#dlq tbody tr").count() == 2
        asked: list[str] = []
        replays: list[str] = []
        page.on("request", lambda r: replays.append(r.url) if r.url.endswith("/ops/api/dlq/replay") else None)

        async def no(dialog: Any) -> None:
            asked.append(dialog.message)
            await dialog.dismiss()

        page.once("dialog", no)
        await page.click("#replay-filtered")
        await wait_for(lambda: asked, timeout_s=10)
        assert asked == [f"Replay 2 open dead letter(s) matching key={ann}?"]
        await _refreshed(page)
        assert replays == []  # not confirmed: nothing replayed

        polls: list[int] = []

        async def first_poll_fails(route: Any) -> None:  # a hiccup of the hub as the dashboard polls
            polls.append(1)
            if len(polls) == 1:
                await route.fulfill(status=503, content_type="application/problem+json",
                                    body='{"title": "De hub start nog", "status": 503}')  # fmt: skip
            else:
                await route.continue_()

        await page.route("**/ops/api/jobs/*", first_poll_fails)

        async def yes(dialog: Any) -> None:
            asked.append(dialog.message)
            await dialog.accept()

        cure.fixed = True
        page.once("dialog", yes)
        await page.click("#replay-filtered")
        await page.locator("#job", has_text="replay 2/2 done").wait_for()
        # what became of each: "done" alone said so too when letters were skipped or failed
        assert await page.locator("#job").text_content() == "replay 2/2 done: 2 replayed, 0 skipped, 0 failed"
        assert "error" not in (await page.locator("#job").get_attribute("class") or "")
        assert len(asked) == 2 and len(replays) == 1 and len(polls) >= 2
        await depth.filter(has_text="1").wait_for()  # Bob's letter stays open
    out = await read_topic(kafka.bootstrap, hub.topic(OUT.name), expect=2, settle_s=0.3)
    assert sorted(Envelope.from_bytes(r.value).payload["n"] for r in out) == [0, 1]


async def _problems(hub: Hub, *references: str) -> list[int]:
    """Open problems of the kind an operator resolves by hand, one per reference; their ids."""
    from hub.notify.problems import record_problem

    assert hub.store is not None
    reason = "match overgeslagen op positie 1: type ontbreekt"
    async with hub.store.transaction() as session:
        return [
            await record_problem(
                session,
                kind="match_overgeslagen",
                caseworker_id="cw-ilse",
                reference=reference,
                reason=reason,
                transaction_id=None,
            )
            for reference in references
        ]


# Page JS: hold the rows these selectors find now; which of them are still the rows found there.
HOLD_ROWS = """(rows) => {
  window.held = Object.fromEntries(Object.entries(rows).map(([k, s]) => [k, document.querySelector(s)]));
}"""
STILL_HELD = """(rows) => Object.keys(rows).filter(
  (k) => window.held[k].isConnected && window.held[k] === document.querySelector(rows[k]))"""
# Page JS: discard a dead letter as another operator would, not through the page's buttons.
DISCARD = """(id) => fetch(`/ops/api/dlq/${encodeURIComponent(id)}/discard`, {
  method: "POST", headers: {"Content-Type": "application/json"},
  body: JSON.stringify({reason: "done elsewhere"}),
}).then((r) => r.status)"""
LISTED = "(n) => document.querySelectorAll('#dlq tbody tr').length === n"
IDS = "(rows) => rows.map((r) => r.dataset.id)"


async def test_a_refresh_leaves_the_rows_that_did_not_change_as_they_were(
    kafka: EmbeddedKafka, served: tuple[Hub, str, Cure]
) -> None:
    """Every refresh (every 3 s) replaced every row of the problems and the dead letters, changed or
    not: a row the operator was about to click (Resolve, Show) was replaced under the cursor, and a
    click landing as it was redrawn hit nothing or another row. A row that did not change stays the
    same element; one that went leaves, and the others stay."""
    hub, base, _ = served
    await _two_dead_letters(kafka, hub)
    gone, kept = await _problems(hub, "m-1", "m-2")
    async with _chromium() as browser:
        page = await _log_in(browser, base, "olga")
        first, second = await _listed_two(page)
        rows = {
            "first letter": f'#dlq tr[data-id="{first}"]',
            "second letter": f'#dlq tr[data-id="{second}"]',
            "problem resolved": f'#problems tr[data-id="{gone}"]',
            "problem kept": f'#problems tr[data-id="{kept}"]',
        }
        await page.locator(rows["problem kept"]).wait_for()
        await page.evaluate(HOLD_ROWS, rows)
        await _refreshed(page, 2)
        assert await page.evaluate(STILL_HELD, rows) == list(rows)

        await page.locator(f"{rows['first letter']} button.show").click()
        await page.locator("#letter-id").filter(has_text=first).wait_for()
        await page.fill("#discard-reason", "test letters, not a partner's")
        await page.click("#discard-one")
        await page.locator(rows["first letter"]).wait_for(state="detached")
        page.once("dialog", lambda dialog: dialog.accept("gemeld bij de Verwijsindex"))
        await page.locator(f"{rows['problem resolved']} button.resolve").click()
        await page.locator(rows["problem resolved"]).wait_for(state="detached")
        await _refreshed(page)
        assert await page.evaluate(STILL_HELD, rows) == ["second letter", "problem kept"]


async def test_a_search_by_a_senders_key_is_kept_fresh_without_being_repeated(
    kafka: EmbeddedKafka, served: tuple[Hub, str, Cure]
) -> None:
    """A privacy officer's search by a sender's own key was never refreshed (repeating it would repeat
    an audited disclosure every 3 s): a letter of it replayed or discarded, on the page or elsewhere,
    stayed listed, and "Replay these" counted it. The refreshes take out the letters no longer open,
    without searching again: one audited search."""
    hub, base, cure = served
    sent = [Envelope(type="T", payload={"n": i, "poison": True}) for i in range(5)]
    keys = [b"key-s"] * 4 + [youth_key("bob").encode()]  # Bob's letter is not the sender's
    records = [(k, e.to_bytes(), e.headers()) for k, e in zip(keys, sent, strict=True)]
    await produce(kafka.bootstrap, hub.topic("ops.in.v1"), records)
    async with _chromium() as browser:
        page = await _log_in(browser, base, "pien")
        await page.wait_for_function(LISTED, arg=5)
        await page.fill("#f-key", "key-s")
        await page.click("#f-apply")
        await page.wait_for_function(LISTED, arg=4)
        replayed, discarded, elsewhere, left = await page.locator("#dlq tbody tr").evaluate_all(IDS)
        status = page.locator("#letter-status")
        await page.locator(f'#dlq tr[data-id="{discarded}"] button.show').click()
        await page.locator("#letter-id").filter(has_text=discarded).wait_for()
        await page.fill("#discard-reason", "test letters, not a partner's")
        await page.click("#discard-one")
        await status.filter(has_text=f"letter {discarded} discarded").wait_for()
        await page.wait_for_function(LISTED, arg=3)

        cure.fixed = True
        await page.locator(f'#dlq tr[data-id="{replayed}"] button.show').click()
        await page.locator("#letter-id").filter(has_text=replayed).wait_for()
        await page.click("#replay-one")
        await page.locator("#job", has_text="replay 1/1 done").wait_for()
        await page.wait_for_function(LISTED, arg=2)

        assert await page.evaluate(DISCARD, elsewhere) == 200  # another operator's, not this page's
        await page.wait_for_function(LISTED, arg=1)
        await _refreshed(page)
        assert await page.locator("#dlq tbody tr").evaluate_all(IDS) == [left]

        asked: list[str] = []

        async def no(dialog: Any) -> None:
            asked.append(dialog.message)
            await dialog.dismiss()

        page.once("dialog", no)
        await page.click("#replay-filtered")
        await wait_for(lambda: asked, timeout_s=10)
        assert asked == ["Replay 1 open dead letter(s) matching key=key-s?"]
    assert hub.store is not None
    async with hub.store.connect() as conn:
        searches = await conn.execute(
            select(func.count()).select_from(audit_log).where(audit_log.c.action == "dlq.searched_by_key")
        )
        assert searches.scalar_one() == 1


async def test_the_problems_shown_are_those_the_toggle_last_asked_for(served: tuple[Hub, str, Cure]) -> None:
    """Ticking "show resolved ones too" as a refresh was on its way waited for that whole refresh (up to
    15 s with a section slow to answer), whose problems, asked for before the tick, showed under the
    ticked box meanwhile. The toggle asks at once, and the refresh's older answer, come after the
    toggle's, is not drawn over it."""
    from hub.notify.problems import resolve_problem

    hub, base, _ = served
    resolved, open_one = await _problems(hub, "m-1", "m-2")
    assert hub.store is not None
    async with hub.store.transaction() as session:
        await resolve_problem(
            session, resolved, user="olga", reason="gemeld", transaction_id=None, system="test"
        )
    shown = f'#problems tr[data-id="{resolved}"]'
    async with _chromium() as browser:
        page = await _log_in(browser, base, "olga")
        await page.locator(f'#problems tr[data-id="{open_one}"]').wait_for()
        assert await page.locator(shown).count() == 0  # open ones only

        release, held = asyncio.Event(), asyncio.Event()

        def asks(url: str) -> bool:
            return "/api/v1/medewerkers/problemen?status=open" in url

        async def slow(route: Any) -> None:  # a refresh's, on its way as the box is ticked
            held.set()
            await release.wait()
            await route.continue_()

        gave_up: list[str] = []  # the page gives up on a request after 15 s
        page.on("requestfailed", lambda r: gave_up.append(r.url) if asks(r.url) else None)
        await page.route(asks, slow)
        await wait_for(held.is_set, timeout_s=30)
        await page.check("#problems-resolved-toggle")
        await page.locator(shown).wait_for()
        assert gave_up == [], "shown only once the refresh on its way gave up"
        async with page.expect_event("requestfinished", lambda r: asks(r.url)):
            release.set()
        await page.evaluate("() => fetch('/ops/api/me').then((r) => r.json())")  # its answer handled
        await page.unroute(asks)
        assert await page.locator(shown).count() == 1
        await _refreshed(page)
        assert await page.locator(f'{shown}[data-status="resolved"]').count() == 1
