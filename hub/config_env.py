"""The environment as the settings read it: a list may be written comma-separated, and a value that
cannot be read is named in one line.

pydantic-settings reads a list or dict setting as JSON, and a value that is not JSON
(`KETENHUB_COMPONENTS=intake,mail`, `KETENHUB_VERWIJSINDEX__RETRY_SCHEDULE_S=1,5,30`) ended start-up in
a `SettingsError` traceback naming neither the variable nor the form it wants. A list of plain values
(names, numbers) is read comma-separated unless it starts with `[` (a JSON list); anything else
that is not JSON is `Unreadable`, which names the setting's path and the form expected, never the
value (it may be a secret).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource, SettingsError

_PLAIN = (str, int, float)
# A setting read from a file: KETENHUB_<SETTING>_FILE names the file (a Docker or Kubernetes secret
# mounted read-only), so that the value is in no process environment `docker inspect` shows.
FILE_SUFFIX = "_FILE"
_FILE_MAX = 64 * 1024  # a password, a URL or a key: a bigger file is the wrong file


class ValueFileError(ValueError):
    """A KETENHUB_<SETTING>_FILE that cannot be used; says the variable and the file, never a value."""


def values_from_files(environ: Mapping[str, str]) -> dict[str, str]:
    """The settings given as KETENHUB_<SETTING>_FILE, read from their files, under KETENHUB_<SETTING>.

    One line break at the end is dropped (`echo pw > file` writes one); the rest is the value as it
    stands. ValueFileError when the file cannot be read, is empty or too big, or when the setting is
    also given directly (which one wins would be a guess).
    """
    found: dict[str, str] = {}
    for name, where in environ.items():
        upper = name.upper()
        if not (upper.startswith("KETENHUB_") and upper.endswith(FILE_SUFFIX)):
            continue
        setting = name[: -len(FILE_SUFFIX)]
        if any(other.upper() == setting.upper() for other in environ):
            raise ValueFileError(f"{upper}: {setting.upper()} is set too; set one of them")
        if not where.strip():
            raise ValueFileError(f"{upper}: names no file; set it to the file's path, or unset it")
        _not_in_its_section_too(environ, setting)
        path = Path(where)
        try:
            with path.open("rb") as file:
                raw = file.read(_FILE_MAX + 1)
        except OSError as exc:
            raise ValueFileError(f"{upper}: cannot read {where}: {exc.strerror or exc}") from None
        if len(raw) > _FILE_MAX:
            raise ValueFileError(f"{upper}: {where} is over {_FILE_MAX // 1024} KiB; is it the right file?")
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueFileError(f"{upper}: {where} is not UTF-8 text") from None
        value = value.removesuffix("\n").removesuffix("\r")
        if not value:
            raise ValueFileError(f"{upper}: {where} is empty")
        found[setting] = value
    return found


def _not_in_its_section_too(environ: Mapping[str, str], setting: str) -> None:
    """ValueFileError when the section of `setting` is given whole as JSON with the setting in it:
    which one wins would be a guess (`KETENHUB_DATABASE='{"password": ...}'` beside
    `KETENHUB_DATABASE__PASSWORD_FILE`)."""
    section, _, field = setting.upper().partition("__")
    if not field or "__" in field:
        return
    for name, value in environ.items():
        if name.upper() != section:
            continue
        try:
            given = json.loads(value)
        except ValueError:
            return  # said as a section that cannot be read
        if isinstance(given, dict) and any(str(k).upper() == field for k in given):
            raise ValueFileError(f"{setting.upper()}{FILE_SUFFIX}: {section} gives it too; set one of them")


class Unreadable(ValueError):
    """A value of the environment that is neither JSON nor, for a list of plain values, comma-separated."""

    def __init__(self, path: tuple[str, ...], expected: str) -> None:
        super().__init__(expected)
        self.path = path


def _plain_items(annotation: Any) -> type | None:
    """The item type of a list, tuple or set of strings or numbers; None for any other type."""
    if get_origin(annotation) not in (list, tuple, set, frozenset):
        return None
    items = [a for a in get_args(annotation) if a is not Ellipsis]
    return items[0] if items and all(a in _PLAIN for a in items) and len(set(items)) == 1 else None


def _expected(annotation: Any) -> str:
    item = _plain_items(annotation)
    if item is str:
        return 'expected names separated by commas (a,b) or a JSON list (["a", "b"])'
    if item is not None:
        return "expected numbers separated by commas (1,5,30) or a JSON list ([1, 5, 30])"
    origin = get_origin(annotation) or annotation
    if isinstance(origin, type) and issubclass(origin, dict):
        return 'expected a JSON object ({"name": "value"})'
    return "expected JSON"


class CommaListEnv(EnvSettingsSource):
    """KETENHUB_* variables, with lists of plain values also written comma-separated."""

    _section = ""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        """The environment, with every KETENHUB_<SETTING>_FILE read into KETENHUB_<SETTING>."""
        read = {k if self.case_sensitive else k.lower(): v for k, v in values_from_files(os.environ).items()}
        files = {f"{k}{FILE_SUFFIX if self.case_sensitive else FILE_SUFFIX.lower()}" for k in read}
        # the _FILE variable itself is no value: in a section it would be read as a setting of that name
        return {k: v for k, v in super()._load_env_vars().items() if k not in files} | read

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        self._section = field_name  # the top-level setting whose variables are being read
        return super().prepare_field_value(field_name, field, value, value_is_complex)

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        annotation = field.annotation if field is not None else None
        if isinstance(value, str) and _plain_items(annotation) and not value.lstrip().startswith("["):
            items = [item.strip() for item in value.split(",")]  # one value is a list of one
            if all(items):
                return items
        else:
            try:
                return super().decode_complex_value(field_name, field, value)  # type: ignore[arg-type]
            except ValueError:
                pass
        section = self._section or field_name
        path = (section,) if field_name == section else (section, field_name)
        raise Unreadable(path, _expected(annotation))


def unreadable_line(exc: SettingsError) -> tuple[tuple[str, ...], str]:
    """The setting's path and what is wrong with it, of a `SettingsError` (no value in it)."""
    cause = exc.__cause__
    if isinstance(cause, Unreadable):
        return cause.path, str(cause)
    field = re.search(r'field "([^"]+)"', str(exc))
    why = str(cause).splitlines()[0] if cause is not None and str(cause) else "cannot be read"
    return ((field[1],) if field else ()), why
