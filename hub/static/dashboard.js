// The operator dashboard: plain JS, no build step, no external scripts; refreshes itself.
"use strict";
const REFRESH_MS = 3000;
let me = null;
let current = null;

const $ = (id) => document.getElementById(id);
const text = (v) => (v === null || v === undefined ? "" : String(v));

// Every request gives up after API_TIMEOUT_MS: a hub (or a proxy) that does not answer is said so,
// rather than holding the page's few connections for good.
const API_TIMEOUT_MS = 15000;

async function api(path, options = {}) {
  let r;
  try {
    r = await fetch(path, {
      credentials: "same-origin", headers: { "Content-Type": "application/json" },
      signal: AbortSignal.timeout(API_TIMEOUT_MS), ...options,
    });
  } catch (e) {
    if (e.name !== "TimeoutError") throw e;
    const asked = (options.method || "GET") === "GET" ? "" : "; it may have been done all the same: look again";
    throw new Error(`no answer within ${API_TIMEOUT_MS / 1000} s${asked}`);
  }
  if (r.status === 401) { location.href = "/ops/login"; throw new Error("logged out"); }
  let body = null;
  if ((r.headers.get("Content-Type") || "").includes("json")) {
    try { body = await r.json(); } catch (e) { body = null; }
  }
  // not the hub's answer (a proxy's page, a login form it was sent to, nothing): its status says
  // what there is to say, and a success it is not
  if (body === null || r.redirected) {
    const e = new Error(`HTTP ${r.status} ${r.statusText}`.trim() + (r.ok ? ": not the hub's answer" : ""));
    e.status = r.status;
    throw e;
  }
  if (!r.ok) {
    const params = (body.invalidParams || []).map((p) => p.name + ": " + p.reason).join("; ");
    const e = new Error((body.detail || body.title || r.statusText) + (params ? " (" + params + ")" : ""));
    e.status = r.status;
    throw e;
  }
  return body;
}

function row(cells, cls = []) {
  const tr = document.createElement("tr");
  cells.forEach((c, i) => {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = text(c);
    if (cls[i]) td.className = cls[i];
    tr.appendChild(td);
  });
  return tr;
}

function fill(tableId, rows) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren(...rows);
}

// A refresh leaves a row whose item did not change as it was, the same element, where it was: a row
// the operator is about to click (Resolve, Show) is not replaced under the cursor. Rows are keyed by
// their data-id; an item that changed is drawn anew, one that went is taken out.
const drawnFrom = new WeakMap();  // a row → the JSON of the item it was drawn from

function fillKeyed(tableId, items, draw) {
  const body = $(tableId).querySelector("tbody");
  const had = new Map([...body.rows].map((tr) => [tr.dataset.id, tr]));
  const rows = items.map((item) => {
    const json = JSON.stringify(item);
    const kept = had.get(String(item.id));
    if (kept && drawnFrom.get(kept) === json) return kept;
    const tr = draw(item);
    drawnFrom.set(tr, json);
    return tr;
  });
  // only a row out of place is moved: the rows before it and after it stay put
  rows.forEach((tr, i) => { if (body.rows[i] !== tr) body.insertBefore(tr, body.rows[i] || null); });
  while (body.rows.length > rows.length) body.lastElementChild.remove();
}

async function refreshHealth() {
  const h = await api("/ops/api/health");
  const rows = [];
  for (const g of h.groups) {
    for (const t of g.topics) {
      const v = document.createElement("span");
      v.textContent = g.verdict; v.className = "verdict-" + g.verdict;
      const tr = row([g.group, t.topic, v, t.lag, t.lag_seconds, t.in_rate, t.out_rate, t.expired_unread], ["", "", "", "num", "num", "num", "num", "num"]);
      tr.dataset.group = g.group; tr.dataset.topic = t.topic;
      rows.push(tr);
    }
  }
  fill("groups", rows);
  fill("topics", h.topics.map((t) => {
    const tr = row([t.topic, t.size, t.in_rate, t.dlq_depth, t.retry_parked], ["", "num", "num", "num dlq-depth", "num"]);
    tr.dataset.topic = t.topic;
    return tr;
  }));
}

async function refreshConnectors() {
  const c = await api("/ops/api/connectors");
  // every component's status has one shape: reachable, last_success (ISO time), last_error, detail;
  // a last error kept after later successes comes with its time (last_error_at)
  fill("connectors", Object.entries(c).map(([name, s]) => {
    const error = s.last_error && s.last_error_at ? s.last_error + " (at " + s.last_error_at + ")" : s.last_error;
    const tr = row([name, s.reachable ? "yes" : "no", s.last_success, error || (s.reachable ? "" : s.detail)]);
    tr.dataset.name = name;
    return tr;
  }));
}

// What an administrator does about each kind of problem the hub records (GET .../problemen).
const TO_DO = {
  geen_bereikbare_ontvanger: "Nobody could read this mail, so it was not sent: give the caseworker a reachable " +
    "delegate or end their absence, then replay its dead letter: the mail's when nobody was found as it was " +
    "sent (the reference is its notification id), else a match mail's match.",
  mail_niet_bezorgd: "The SMTP server refused it: correct the e-mail address in the directory, then replay " +
    "the mail's dead letter.",
  mail_inhoud_geweigerd: "The SMTP server refused the message itself (its content or its size), not the " +
    "address: the reason gives the server's answer; have the mail server's administrator look at it, then " +
    "replay the mail's dead letter.",
  mail_niet_verstuurd_storing: "An outage lasted longer than the retries (the reason says which: the SMTP " +
    "server unreachable or answering 'try later', refusing the hub's SMTP settings (the reason names the " +
    "setting to correct), or the hub's store): check the SMTP server is reachable again (the mail " +
    "connector's line), then replay the mail's dead letter.",
  mail_uitkomst_onbekend: "It may have been delivered: ask the recipient before replaying its dead letter " +
    "(a replay sends it again).",
  borging_zonder_vervanger: "Set a reachable delegate (meldingsbevoegd, with a phone number the Verwijsindex " +
    "takes), then run borging for this caseworker or wait for the daily round.",
  borging_mislukt: "The next borging round tries again (a round without an error resolves this); if this " +
    "keeps coming back, look in the hub's log.",
  match_overgeslagen: "The Verwijsindex sent a match that breaks the contract: report the match id to the " +
    "Verwijsindex, then resolve this problem (the hub cannot see the index mend it).",
};
const UNREACHABLE_TO_DO = "Set a reachable delegate (or end the absence): until then their mail is not sent " +
  "and borging cannot move their signals.";

// The list is the toggle's last position's: a refresh on its way as the operator ticks or unticks it,
// answered after the toggle's own request, is not drawn over it.
let problemsAsked = 0, problemsDrawn = 0;

async function refreshProblems() {
  const n = ++problemsAsked;
  const status = $("problems-resolved-toggle").checked ? "all" : "open";
  const p = await api("/api/v1/medewerkers/problemen?status=" + status);
  if (n < problemsDrawn) return;
  problemsDrawn = n;
  if ($("problems-status").textContent.startsWith("problems not shown")) $("problems-status").textContent = "";
  fill("unreachable", p.unreachableNow.map((c) => {
    const tr = row([c.caseworkerId, c.name, c.active ? "absent" : "gone (inactive)", UNREACHABLE_TO_DO]);
    tr.dataset.id = c.caseworkerId;
    return tr;
  }));
  fillKeyed("problems", p.recorded, (q) => {
    const resolved = q.status === "resolved"
      ? `${q.resolvedAt} by ${q.resolvedBy} (${q.resolvedHow}): ${q.resolution}` : "";
    let act = "";
    if (q.status === "open" && me && me.role !== "viewer") {
      act = document.createElement("button");
      act.textContent = "Resolve"; act.className = "resolve";
      act.addEventListener("click", () => resolveProblem(q));
    }
    const tr = row([q.at, q.kind, q.caseworkerId, q.reference, q.reason, TO_DO[q.kind] || "See the reason.",
      resolved, act]);
    tr.dataset.kind = q.kind; tr.dataset.caseworker = text(q.caseworkerId);
    tr.dataset.id = q.id; tr.dataset.status = q.status;
    return tr;
  });
}

// An operator marks a problem resolved with what was done about it (audited; no BSN, no name).
// The prompt names the problem (its row may change or go while the prompt is open).
async function resolveProblem(q) {
  const id = q.id;
  const what = `problem ${id} (${q.kind}, ${q.caseworkerId || "no caseworker"}, ${q.reference || "no reference"}, ${q.at})`;
  const reason = prompt("What was done about " + what + "? (no BSN or name of a youth)");
  if (reason === null) return;
  try {
    await api("/api/v1/medewerkers/problemen/" + encodeURIComponent(id) + "/oplossing",
      { method: "POST", body: JSON.stringify({ reason }) });
    $("problems-status").textContent = "problem " + id + " resolved";
  } catch (e) {
    $("problems-status").textContent = "problem " + id + " not resolved: " + e.message;
  }
  refreshAll();
}

// The embedded SMTP sink; null until the hub answered, false for good once it said there is none
// (a real SMTP server is configured, which does not change while the hub runs).
let mailSink = null;

async function refreshMails() {
  if (mailSink === false) return;
  let list;
  try {
    list = await api("/api/v1/mails?limit=50");
  } catch (e) {
    if (e.status !== 404) throw e;
    mailSink = false; $("mails-section").hidden = true;
    return;
  }
  mailSink = true; $("mails-section").hidden = false;
  fillKeyed("mails", list.mails, (m) => {
    const open = document.createElement("button");
    open.textContent = "Show"; open.className = "show";
    open.addEventListener("click", () => openMail(m.id));
    const tr = row([m.receivedAt, m.to.join(", "), m.subject, open]);
    tr.dataset.id = m.id;
    return tr;
  });
}

// Its text as a caseworker reads it; the raw message only when asked for, for the mail shown, and not
// kept for the next one. Each view is audited. The mail last asked for is the one shown: an earlier
// one answered later is not drawn over it.
let mailAsked = 0, mailWanted = null;
function openMail(id) {
  if (id !== mailWanted) $("mail-raw-toggle").checked = false;
  return showMail(id).catch((e) => { $("mails-status").textContent = "mail " + id + " not shown: " + e.message; });
}

async function showMail(id) {
  const n = ++mailAsked;
  mailWanted = id;
  if (!$("mail-raw-toggle").checked) { $("mail-raw").textContent = ""; $("mail-raw").hidden = true; }
  const raw = $("mail-raw-toggle").checked;
  const m = await api("/api/v1/mails/" + encodeURIComponent(id) + (raw ? "?raw=true" : ""));
  if (n !== mailAsked) return;
  $("mails-status").textContent = "";
  $("mail").hidden = false;
  $("mail-id").textContent = m.id;
  fill("mail-headers", [["received", m.receivedAt], ["from", m.from], ["to", m.to.join(", ")],
    ["subject", m.subject]].map((r) => row(r)));
  $("mail-text").textContent = m.text;
  $("mail-raw").textContent = raw ? m.raw : "";
  $("mail-raw").hidden = !raw;
}

function filters() {
  const p = new URLSearchParams();
  if ($("f-topic").value) p.set("topic", $("f-topic").value);
  if ($("f-error").value) p.set("error_class", $("f-error").value);
  if ($("f-key").value) p.set("key", $("f-key").value);
  return p;
}

// A key that is not the hub's youth key is the sender's own (a BSN even): a search by it is a
// disclosure, audited each time, so it runs when asked for, not again on every refresh.
const YOUTH_KEY = /^[0-9a-f]{64}$/;
const bySendersKey = (filter) => Boolean(filter.get("key")) && !YOUTH_KEY.test(filter.get("key"));

// The refreshes keep such a search's list fresh without a disclosure: the letters it found that are
// no longer open (replayed, discarded, here or elsewhere) leave it, as the open letters of its other
// filters, which any operator may list, tell. Letters the key gets since are found by searching again.
const OPEN_LISTED = 1000;  // the most the hub lists at once

async function stillOpen(found) {
  const others = new URLSearchParams(found.filter);
  others.delete("key"); others.set("limit", String(OPEN_LISTED));
  const open = await api("/ops/api/dlq?" + others.toString());
  if (open.total > open.items.length) return found;  // more open letters than listed: none known gone
  const ids = new Set(open.items.map((d) => d.id));
  const items = found.items.filter((d) => ids.has(d.id));
  return { total: found.total - (found.items.length - items.length), items };
}

// A search by a sender's key goes in a request's body, never its URL (proxies and browsers keep
// URLs); a youth key is a pseudonym, listed as every other filter.
function listDlq(filter) {
  if (!bySendersKey(filter)) return api("/ops/api/dlq?" + filter.toString());
  return api("/ops/api/dlq/search", { method: "POST", body: JSON.stringify(Object.fromEntries(filter)) });
}

// The list shows the filter last applied ("Filter"), not what is typed in the boxes since; "Replay
// these" replays that filter, with the count of open letters it matched at the list's last refresh.
let appliedDlq = new URLSearchParams();
let shownDlq = null;
let dlqAsked = 0, dlqDrawn = 0;  // an answer to an earlier request never replaces a later one's

async function refreshDlq(asked) {
  const shown = asked === true ? filters() : appliedDlq;
  const refreshFound = bySendersKey(shown) && asked !== true;
  // a search still on its way draws its own list; the refresh has none of it to keep fresh yet
  if (refreshFound && !(shownDlq && shownDlq.filter === shown)) return;
  const found = refreshFound ? shownDlq : null;
  const n = ++dlqAsked;
  // Applied as it is asked: a refresh that begins while it is on its way asks for it too, rather
  // than for the filter before it, whose answer would be drawn over this one's.
  if (asked === true) appliedDlq = shown;
  let list;
  try {
    list = found ? await stillOpen(found) : await listDlq(shown);
  } catch (e) {  // not applied after all: the refreshes go on with the filter of the list shown
    if (asked === true && appliedDlq === shown) appliedDlq = shownDlq ? shownDlq.filter : new URLSearchParams();
    throw e;
  }
  if (n < dlqDrawn) return;
  dlqDrawn = n;
  shownDlq = { filter: shown, total: list.total, listed: list.items.length, items: list.items };
  fillKeyed("dlq", list.items, (d) => {
    const open = document.createElement("button");
    open.textContent = "Show"; open.className = "show";
    open.addEventListener("click", () => openLetter(d.id));
    // a copy of a letter (the relay published one record twice): discarded alone, skipped at replay
    const copy = d.copy_of ? ` (a copy of ${d.copy_of})` : "";
    const tr = row([d.failed_at, d.original_topic, (d.error_class || "").split(".").pop() + ": " + text(d.error) + copy, d.key, open]);
    tr.dataset.id = d.id;
    return tr;
  });
}

// The letter last asked for is the one shown, and the one "Replay"/"Discard" act on: a letter asked
// for earlier and answered later is not drawn over it. Personal data is shown for the letter it was
// asked for only: another letter opens masked, and unticking the box takes it off the page at once.
let letterAsked = 0, letterWanted = null;
function openLetter(id) {
  if (id !== letterWanted) { $("unmask").checked = false; $("discard-reason").value = ""; }
  return showLetter(id).catch((e) => { $("letter-error").textContent = "letter " + id + " not shown: " + e.message; });
}

function maskShown() {
  $("letter-payload").textContent = "";
  fill("letter-headers", []);
}

async function showLetter(id) {
  const n = ++letterAsked;
  letterWanted = id;
  const unmask = $("unmask").checked;
  if (!unmask && current && current.unmasked) maskShown();
  const d = await api("/ops/api/dlq/" + encodeURIComponent(id) + (unmask ? "?unmask=true" : ""));
  if (n !== letterAsked) return;
  $("letter-error").textContent = "";
  current = { ...d, unmasked: unmask };
  $("letter").hidden = false;
  $("letter-id").textContent = d.id;
  fill("letter-headers", Object.entries(d.headers).map(([k, v]) => row([k, v])));
  $("letter-payload").textContent = JSON.stringify(d.payload, null, 2);
  const copy = d.copy_of && d.status === "open" ? `, a copy of ${d.copy_of} (a discard drops this copy alone)` : "";
  $("letter-status").textContent = d.status + copy;
}

// A poll that fails (the hub restarting, a store hiccup) is tried again, not the end of the progress.
// The progress shown is the last job started's: an earlier job's polls stop writing.
let watching = 0;
function watchJob(job) {
  follow(job, ++watching);
}

async function follow(job, token) {
  if (token !== watching) return;
  $("job").textContent = `replay ${job.done + job.skipped + job.failed}/${job.total}`;
  if (job.state !== "running") {
    // what became of each letter: one skipped (replayed or discarded already) or failed is no "done"
    const counts = `: ${job.done} replayed, ${job.skipped} skipped, ${job.failed} failed`;
    $("job").textContent += " " + job.state + counts + (job.error ? " (" + job.error + ")" : "");
    $("job").classList.toggle("error", job.failed > 0 || job.state !== "done");
    refreshAll();
    return;
  }
  setTimeout(async () => {
    let next = job;
    try {
      next = await api("/ops/api/jobs/" + encodeURIComponent(job.id));
    } catch (e) {
      if (token !== watching) return;
      if (e.status === 404) { $("job").textContent = `replay job ${job.id}: ${e.message}`; return; }
      $("job").textContent = `replay ${job.done + job.skipped + job.failed}/${job.total} (progress not read: ${e.message}; trying again)`;
      setTimeout(() => follow(job, token), 2000);
      return;
    }
    follow(next, token);
  }, 500);
}

// Replays the filter of the list shown (not what was typed since), once the operator confirmed the count.
async function replayShown() {
  if (!shownDlq) return;
  const { filter, total, listed } = shownDlq;
  if (total === 0) { $("job").textContent = "no open dead letter in the list: nothing to replay"; return; }
  const which = filter.toString()
    ? "matching " + [...filter.entries()].map(([k, v]) => `${k}=${v}`).join(", ") : "(every open dead letter)";
  const shownNote = listed < total ? ` (the list shows the first ${listed})` : "";
  if (!confirm(`Replay ${total} open dead letter(s) ${which}${shownNote}?`)) return;
  const body = Object.fromEntries(filter.entries());
  if (!filter.toString()) body.all = true;
  try {
    watchJob(await api("/ops/api/dlq/replay", { method: "POST", body: JSON.stringify(body) }));
  } catch (e) {
    $("job").textContent = "replay not started: " + e.message;
  }
}

// The timeline of the id last asked for: an earlier search answered later is not drawn over it.
let timelineAsked = 0;
async function findTimeline() {
  const n = ++timelineAsked;
  const id = $("t-id").value.trim();
  $("t-status").textContent = "searching " + id;
  let t;
  try {
    t = await api("/ops/api/timeline?id=" + encodeURIComponent(id));
  } catch (e) {
    if (n !== timelineAsked) return;
    $("timeline").replaceChildren();
    $("t-status").textContent = "not searched: " + e.message;
    return;
  }
  if (n !== timelineAsked) return;
  $("timeline").replaceChildren(...t.events.map((e) => {
    const li = document.createElement("li");
    li.textContent = `${e.at}  ${e.action}  (${e.system}, ${e.user})`;
    return li;
  }));
  $("t-status").textContent = !t.events.length ? "nothing recorded under " + t.id
    : t.truncated ? `the first ${t.events.length} event(s) for ${t.id}; there are more: search a narrower id`
    : `${t.events.length} event(s) for ${t.id}`;
}

// Every section refreshes on its own: one that fails (health during a broker outage) says so and
// leaves the others fresh. One refresh at a time: asked for while one runs, one more follows it; the
// next periodic one starts REFRESH_MS after the last ended, so slow answers never pile up.
let refreshing = null, refreshAgain = false;
function refreshAll() {
  if (refreshing) { refreshAgain = true; return refreshing; }
  refreshing = (async () => {
    try {
      do { refreshAgain = false; await refreshSections(); } while (refreshAgain);
    } finally { refreshing = null; }
  })();
  return refreshing;
}

async function refreshSections() {
  const sections = [["health", refreshHealth], ["connectors", refreshConnectors],
    ["problems", refreshProblems], ["mails", refreshMails]];
  if (me && me.role !== "viewer") sections.push(["dead letters", () => refreshDlq()]);
  const results = await Promise.allSettled(sections.map(([, refresh]) => refresh()));
  const why = (reason) => (reason && reason.message) || String(reason);
  const failed = results.map((r, i) => r.status === "rejected" ? `${sections[i][0]}: ${why(r.reason)}` : null)
    .filter((f) => f !== null);
  const at = new Date().toLocaleTimeString();
  $("updated").textContent = failed.length
    ? `refresh failed at ${at}, shown as before: ` + failed.join("; ") : "updated " + at;
}

async function refreshForEver() {
  try {
    await refreshAll();
  } catch (e) {
    $("updated").textContent = "refresh failed: " + e.message;
  } finally {  // whatever became of this one, the next one comes
    setTimeout(refreshForEver, REFRESH_MS);
  }
}

async function main() {
  for (let wait = 1000; me === null; wait = Math.min(wait * 2, 30000)) {
    try {
      me = await api("/ops/api/me");
    } catch (e) {  // the hub restarting: not connected yet, tried again
      $("updated").textContent = "not connected: " + e.message + "; trying again";
      await new Promise((done) => setTimeout(done, wait));
    }
  }
  $("who").textContent = `${me.username} (${me.role})`;
  if (me.role === "viewer") document.querySelectorAll(".operator-only").forEach((e) => e.classList.add("hidden-role"));
  if (me.role !== "privacy_officer") document.querySelectorAll(".privacy-only").forEach((e) => e.classList.add("hidden-role"));
  $("f-apply").addEventListener("click", async () => {
    $("dlq-error").textContent = "";
    try {
      await refreshDlq(true);
    } catch (e) {
      $("dlq-error").textContent = "filter not applied: " + e.message;
    }
  });
  $("unmask").addEventListener("change", () => letterWanted && openLetter(letterWanted));
  $("mail-raw-toggle").addEventListener("change", () => mailWanted && openMail(mailWanted));
  // asked for at once, not after a refresh on its way (which a slow section can hold up to API_TIMEOUT_MS)
  $("problems-resolved-toggle").addEventListener("change", () => refreshProblems().catch((e) => {
    $("problems-status").textContent = "problems not shown: " + e.message;
  }));
  // An action names the letter it acted on (another may be shown by the time it is answered).
  const onLetter = (button, act) => $(button).addEventListener("click", async () => {
    if (!current || current.id !== letterWanted) {  // the letter asked for is not shown (yet)
      $("letter-status").textContent = "the letter asked for is not shown: open it again";
      return;
    }
    const id = current.id;
    $("replay-one").disabled = $("discard-one").disabled = true;
    try {
      $("letter-status").textContent = await act(id);
    } catch (e) {
      $("letter-status").textContent = `letter ${id}: ` + e.message;
    } finally {
      $("replay-one").disabled = $("discard-one").disabled = false;
    }
  });
  onLetter("replay-one", async (id) => {
    let job;
    try {
      job = await api("/ops/api/dlq/" + encodeURIComponent(id) + "/replay", { method: "POST" });
    } catch (e) { return `letter ${id} not replayed: ` + e.message; }
    watchJob(job);
    return `letter ${id} replaying (progress beside "Replay these")`;
  });
  onLetter("discard-one", async (id) => {
    let done;
    try {
      done = await api("/ops/api/dlq/" + encodeURIComponent(id) + "/discard",
        { method: "POST", body: JSON.stringify({ reason: $("discard-reason").value }) });
    } catch (e) { return `letter ${id} not discarded: ` + e.message; }
    $("discard-reason").value = "";
    refreshAll();
    if (done.copy_of) return `letter ${id} discarded, a copy of ${done.copy_of}`;
    const copies = done.copies.length ? `, and its ${done.copies.length === 1 ? "copy" : "copies"} ${done.copies.join(", ")} with it` : "";
    return `letter ${id} discarded` + copies;
  });
  $("replay-filtered").addEventListener("click", replayShown);
  $("t-find").addEventListener("click", findTimeline);
  refreshForEver();
}

main();
