"""`ketenhub medewerkers import|list` and `ketenhub mails` as an administrator runs them (SQLite)."""

from __future__ import annotations

import getpass
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

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
