"""`ketenhub medewerkers import|list` and `ketenhub mails` as an administrator runs them (SQLite)."""

from __future__ import annotations

import getpass
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.procs import from_a_shell

pytestmark = pytest.mark.e2e
KETENHUB = str(Path(sys.executable).with_name("ketenhub"))
CSV = (
    "\ufeffMedewerkernummer;Naam;E-mail;Team;Meldingsbevoegd;Vervanger;Afwezig vanaf;Afwezig tot en met\n"
    "cw-ilse;Ilse Bakker;ilse@halt.nl;Den Haag;ja;cw-omar;;\n"
    "cw-omar;Omar Haddou;omar@halt.nl;Gouda;nee;;01-03-2025;14-03-2025\n"
    "cw-bad;Bad Row;not-an-address;Leiden;ja;;;\n"
)


def _run(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETENHUB_")}
    env["KETENHUB_DATABASE__URL"] = f"sqlite+aiosqlite:///{tmp / 'hub.db'}"
    return subprocess.run([KETENHUB, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_import_reports_each_row_and_list_shows_the_directory(tmp_path: Path) -> None:
    file = tmp_path / "medewerkers.csv"
    file.write_text(CSV, encoding="utf-8")
    done = _run(tmp_path, "medewerkers", "import", str(file))
    assert done.returncode == 1, done.stderr  # one row failed: a non-zero exit for scripts
    lines = done.stdout.splitlines()
    assert any("rij    2" in line and "AANGEMAAKT" in line and "cw-ilse" in line for line in lines)
    assert any("rij    4" in line and "FOUT" in line and "E-mail" in line for line in lines)
    assert "3 rijen: 2 aangemaakt, 0 bijgewerkt, 0 ongewijzigd, 1 fout" in done.stdout
    with sqlite3.connect(tmp_path / "hub.db") as db:  # rule 18: who ran it, as the ops commands record
        users = {u for (u,) in db.execute("SELECT user FROM audit_log WHERE action = 'directory.imported'")}
    assert users == {f"cli:{getpass.getuser()}"}, users

    again = _run(tmp_path, "medewerkers", "import", "--json", str(file))  # the same file: nothing changes
    assert '"ongewijzigd": 2' in again.stdout and '"bijgewerkt": 0' in again.stdout
    changed = tmp_path / "changed.csv"
    changed.write_text(CSV.replace("Den Haag", "Leiden", 1), encoding="utf-8")
    third = _run(tmp_path, "medewerkers", "import", str(changed))
    assert "1 bijgewerkt, 1 ongewijzigd" in third.stdout
    assert any("cw-ilse" in line and "Team: Den Haag -> Leiden" in line for line in third.stdout.splitlines())

    listed = _run(tmp_path, "medewerkers", "list")
    assert listed.returncode == 0, listed.stderr
    assert (
        "cw-ilse" in listed.stdout and "vervanger=cw-omar" in listed.stdout and "cw-bad" not in listed.stdout
    )

    wrong = tmp_path / "comma.csv"
    wrong.write_text("a,b\n1,2\n", encoding="utf-8")
    refused = _run(tmp_path, "medewerkers", "import", str(wrong))
    assert refused.returncode == 2 and "puntkomma" in refused.stderr

    mails = _run(tmp_path, "mails")
    assert mails.returncode == 0 and "no mails yet" in mails.stdout


def test_mails_limit_is_bounded_and_show_finds_any_kept_mail(tmp_path: Path) -> None:
    import json
    import sqlite3

    assert _run(tmp_path, "mails").returncode == 0  # creates the database
    raw = "Subject: Borging {n}\r\nTo: ilse@halt.nl\r\nContent-Type: text/plain\r\n\r\nmail nummer {n}\r\n"
    with sqlite3.connect(tmp_path / "hub.db") as db:  # more than the 500 newest: the sink may keep more
        db.executemany(
            "INSERT INTO mail_sink (received_at, mail_from, rcpt_to, subject, message_id, raw)"
            " VALUES ('2025-03-01 10:00:00+00:00', 'hub@halt.nl', 'ilse@halt.nl', ?, NULL, ?)",
            [(f"Borging {n}", raw.format(n=n)) for n in range(1, 602)],
        )

    for wrong in ("-1", "0", "501"):
        refused = _run(tmp_path, "mails", "--limit", wrong)
        assert refused.returncode == 2 and "--limit" in refused.stderr, (wrong, refused.stderr)
        assert "Traceback" not in refused.stderr and "no mails yet" not in refused.stdout
    listed = _run(tmp_path, "mails", "--limit", "500")
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 500
    assert "Borging 601" in listed.stdout.splitlines()[0]

    oldest = _run(tmp_path, "mails", "--show", "1")  # 600 mails newer than it
    assert oldest.returncode == 0, oldest.stderr
    assert "Onderwerp: Borging 1\n" in oldest.stdout and "mail nummer 1" in oldest.stdout
    with sqlite3.connect(tmp_path / "hub.db") as db:  # reading a mail's text is audited (rule 18)
        read = db.execute("SELECT user, objects FROM audit_log WHERE action = 'mail.sink_read'").fetchall()
    assert len(read) == 1 and read[0][0].startswith("cli") and json.loads(read[0][1])["mail_ids"] == [1], read
    missing = _run(tmp_path, "mails", "--show", "602")
    assert missing.returncode == 1 and "no mail 602" in missing.stderr
    huge = _run(tmp_path, "mails", "--show", str(2**70))  # past any database's integer: a traceback
    assert huge.returncode == 2 and "Traceback" not in huge.stderr, huge.stderr


def _many(tmp: Path, n: int) -> Path:
    file = tmp / "medewerkers.csv"
    rows = [f"M{i:05d};Medewerker {i};m{i}@halt.nl;Den Haag;0701234567;ja" for i in range(n)]
    file.write_text("Medewerkernummer;Naam;E-mail;Team;Telefoon;Meldingsbevoegd\n" + "\n".join(rows) + "\n")
    return file


def _loaded(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM caseworkers").fetchone()[0])
    except sqlite3.OperationalError:  # not made yet
        return 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_import_says_where_it_stopped_and_the_same_file_again_loads_the_rest(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """Ctrl-C or SIGTERM ended the import without a word (exit 130/143), part of the file loaded."""
    file, db = _many(tmp_path, 800), tmp_path / "hub.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETENHUB_")}
    env["KETENHUB_DATABASE__URL"] = f"sqlite+aiosqlite:///{db}"
    proc = from_a_shell([KETENHUB, "medewerkers", "import", str(file)], env)
    try:
        deadline = time.monotonic() + 60
        while _loaded(db) < 20 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the import ended before it could be stopped"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    loaded = _loaded(db)
    assert 20 <= loaded < 800
    last = loaded + 1  # the header is row 1
    assert err.splitlines() == [
        f"ketenhub: medewerkers.csv: gestopt ({sig.name}) na rij {last}: rij 2 t/m {last} is verwerkt (het"
        " verslag hierboven), de rijen daarna niet. Importeer hetzelfde bestand opnieuw voor de rest: wat al"
        " geladen is, komt terug als ONGEWIJZIGD (en wordt niet opnieuw geschreven of gelogd)."
    ]
    lines = out.splitlines()
    assert lines[-1] == f"{loaded} rijen: {loaded} aangemaakt, 0 bijgewerkt, 0 ongewijzigd, 0 fout"
    rows = [line for line in lines if line.startswith("rij ")]  # the report so far, a line per row
    assert len(rows) == loaded and rows[-1].startswith(f"rij {last:>4}  AANGEMAAKT")

    again = subprocess.run(
        [KETENHUB, "medewerkers", "import", str(file)], env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == (
        f"800 rijen: {800 - loaded} aangemaakt, 0 bijgewerkt, {loaded} ongewijzigd, 0 fout"
    )
    assert _loaded(db) == 800


def test_an_import_on_a_terminal_shows_its_progress(tmp_path: Path) -> None:
    """3,000 rows took 15 seconds without a sign of life; now it counts on standard error."""
    import pty

    file = _many(tmp_path, 300)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETENHUB_")}
    env["KETENHUB_DATABASE__URL"] = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    parent, child = pty.openpty()
    try:
        done = subprocess.run(
            [KETENHUB, "medewerkers", "import", str(file)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=child,
            timeout=120,
            check=False,
        )
        os.close(child)
        shown = b""
        while True:
            try:
                chunk = os.read(parent, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(parent)
    assert done.returncode == 0
    assert b"medewerkers.csv: 300 van 300 rijen verwerkt" in shown, shown[-500:]
    assert b"300 rijen" not in done.stdout.splitlines()[0]  # the report itself is not on the terminal's line
