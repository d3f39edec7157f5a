"""Errors that name config fields (stdlib only): `ConfigError(record, field, problem)` and the
field references inside messages (`render_fields`, `field_error`).

Library code speaks in fields; only `sit.commands` turns a field into its command-line flag.
Re-exported by `sit.config`. Must not import: anything of sit.
"""

from __future__ import annotations

import re


class ConfigError(ValueError):
    """A bad value of one config field: ``record`` (the dataclass name, or "" for a plain argument of
    a library function) and ``field`` name it, the message says what is allowed. Library code speaks
    in fields; only ``sit.commands`` turns a field into its command-line flag (`sit train`:
    ``--repa-depth`` for TrainConfig.repa_depth). ``problem`` may name other fields (`render_fields`)."""

    def __init__(self, record: str, field: str, problem: str):
        self.record, self.field, self.problem = record, field, problem
        super().__init__(self.render(field_name))

    def __reduce__(self):  # pickled across processes (study workers) with its fields, not its text
        return (type(self), (self.record, self.field, self.problem))

    def render(self, name) -> str:
        """The one-line message with each field written as ``name(record, field)``."""
        return f"{name(self.record, self.field)} {render_fields(self.problem, name, self.record)}"


# a field named inside a message: {field} (the error's own record), {Record.field}, or {.arg} (a plain
# argument of a library function)
_FIELD_REF = re.compile(r"\{((?:[A-Z][A-Za-z0-9]*)?\.)?([a-z_][a-z0-9_]*)\}")


def render_fields(text: str, name, record: str = "") -> str:
    """``text`` with each field reference written as ``name(record, field)``."""
    def ref(m: re.Match) -> str:
        rec = m.group(1)
        return name(record if rec is None else rec[:-1], m.group(2))

    return _FIELD_REF.sub(ref, text)


def field_error(cls: type[Exception], template: str) -> Exception:
    """An exception of ``cls`` whose message names fields (`render_fields`; a bare ``{arg}`` is a plain
    argument): its text in field names, and ``template`` kept for `sit.commands` to write flags."""
    e = cls(render_fields(template, field_name))
    e.template = template
    return e


def field_name(record: str, field: str) -> str:
    """A field as library messages write it: ``Record.field`` (a plain argument: its name)."""
    return f"{record}.{field}" if record else field
