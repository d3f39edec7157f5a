"""Flags generated from the fields of typed records: the one flag <-> field translation.

A record is a dataclass whose fields say, in their metadata, how they appear on a command line:
``help`` (text, or a function giving it; may name fields in braces, ``{vae}`` of the record,
``{Record.field}`` of another: written as their flags),
``flag`` (when it is not ``--field-name``; None: the field has no flag, ``internal`` says why),
``metavar``, ``parse`` (the flag's text is handed to the record as written: the record's function
reads it), ``choices`` (a function giving the allowed values, for a field whose values are a
table's rows; None: any value, checked by the record), ``dest`` (when two records' fields share a
name in one command). The type comes from the annotation
(``X | None`` as X; bool: --x / --no-x, or one --no-x flag, or with metadata ``switch`` one --x
flag that turns it on; a field without a default: a required flag; metadata ``positional``: an
argument given by position, named by its metavar; tuple: one or more values, or with metadata
``repeat`` one value per flag, repeatable; Literal:
its values as choices, None written "none"), the default shown from the record (or from an
instance given, e.g. a command's default sampler). `add_record_arguments` builds the arguments,
`flag_of` is the translation (read by the errors, `sit.commands._errors`), `given_values` reads
the parsed values back as field values.

Imports `sit.config` (stdlib only) at module level, the records' modules when a record is named by
its name; never a command module.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from types import UnionType
from typing import Any, Callable, Literal, Union, get_args, get_origin, get_type_hints

from sit.config import render_fields

# the torch-free modules of the records errors name (`sit.config.ConfigError(record, ...)`); records a
# command defines itself are registered when its parser is built (`add_record_arguments`, `register`)
RECORD_MODULES = {"TrainConfig": "sit.config", "ModelConfig": "sit.config", "SampleConfig": "sit.sampler_config",
                  "DiscreteSampleConfig": "sit.sampler_config", "SampleSpec": "sit.generate.spec",
                  "GuidanceConfig": "sit.guidance", "Guide": "sit.guidance"}
_REGISTERED: dict[str, type] = {}

def register(record: type) -> type:
    """Make ``record`` known by its name to `flag_of` (a command's own options record)."""
    _REGISTERED[record.__name__] = record
    return record


def record_class(name: str) -> type | None:
    """The record class called ``name`` (None when it is not known)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    module = RECORD_MODULES.get(name)
    return getattr(importlib.import_module(module), name, None) if module else None


def _field(record: type | str, field: str) -> dataclasses.Field | None:
    cls = record_class(record) if isinstance(record, str) else record
    if cls is None or not dataclasses.is_dataclass(cls):
        return None
    return next((f for f in dataclasses.fields(cls) if f.name == field), None)


def flag_of(record: type | str, field: str) -> str | None:
    """The flag that sets ``record.field`` (a record class or its name): the field's metadata
    "flag" (None: the field has no flag), else ``--`` + the field with ``-`` for ``_``."""
    f = _field(record, field)
    if f is not None and f.metadata.get("positional"):   # an argument given by position: its metavar
        return f.metadata.get("metavar", field.upper())
    if f is not None and "flag" in f.metadata:
        return f.metadata["flag"]
    return "--" + field.replace("_", "-")


def flag_fields(record: type) -> tuple[str, ...]:
    """The fields of ``record`` that have a flag (metadata "help", and a flag that is not None)."""
    return tuple(f.name for f in dataclasses.fields(record) if "help" in f.metadata and flag_of(record, f.name))


def show(v: Any) -> str:
    """A default as help shows it: on / off, 1e-06, none, the value."""
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:g}"
    return "none" if v is None else str(v)


def without_none(hint):
    """X for ``X | None`` (Optional), else the hint itself."""
    args = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) in (Union, UnionType) and len(args) == 1:
        return args[0]
    return hint


_HINTS: dict[type, dict] = {}


def hints(record: type) -> dict[str, Any]:
    """``record``'s field annotations, evaluated (once per record); one that names a type its module
    imports only for type checkers (a torch-using record) is ``Any``."""
    if record not in _HINTS:
        try:
            _HINTS[record] = get_type_hints(record)
        except NameError:
            names = vars(sys.modules[record.__module__])
            _HINTS[record] = {f.name: _evaluate(f.type, names) for f in dataclasses.fields(record)}
    return _HINTS[record]


def _evaluate(annotation, names: dict) -> Any:
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, dict(names))  # noqa: S307  an annotation of a record's own module
    except NameError:
        return Any


def field_choices(record: type, f: dataclasses.Field) -> tuple | None:
    """The values field ``f`` allows: its metadata "choices" (a function: a table's rows, read now;
    None: any value), else its ``Literal`` annotation's values; None when free."""
    if "choices" in f.metadata:
        fn = f.metadata["choices"]
        return None if fn is None else tuple(fn())
    hint = hints(record)[f.name]
    return get_args(hint) if get_origin(hint) is Literal else None


def _default_note(f: dataclasses.Field, defaults: Any, choices) -> str:
    """" (default X)": the field's value in ``defaults`` (an instance) or the record's default;
    nothing for a field without one (None / empty) unless None is a choice."""
    value = getattr(defaults, f.name) if defaults is not None else f.default
    if value is dataclasses.MISSING or value == () or (value is None and None not in (choices or ())):
        return ""
    return f" (default {show(value) if isinstance(value, bool) or value is None else value})"


def add_record_arguments(group, record: type, fields: tuple[str, ...] | None = None, *,
                         defaults: Any = None, keep_defaults: bool = False,
                         default_note: Callable[[dataclasses.Field, tuple | None], str] | None = None,
                         flags: Callable[[str], str | None] | None = None) -> list[argparse.Action]:
    """The flags of ``record``'s ``fields`` (default: every field with metadata "help" and a flag),
    each read from its field (see the module docstring), added to ``group``; dest is the field name.

    ``defaults``: an instance whose values help shows as the defaults (else the record's);
    ``keep_defaults``: the parsed default is that value (else None, so a command sees only what the
    command line gave); ``default_note(field, choices)``: the help's default text, written by the
    command (`sit train`: the record's and the demo's); ``flags(name)``: the flag of a field named
    in braces in help (default: that field's in ``record``)."""
    register(record)
    types = hints(record)
    by_name = {f.name: f for f in dataclasses.fields(record)}
    names = flag_fields(record) if fields is None else fields
    own = flags or (lambda name: flag_of(record, name) if name in by_name else "--" + name.replace("_", "-"))

    def in_help(rec: str, name: str) -> str:   # {field} of this record, {Record.field} of another
        return own(name) if rec in ("", record.__name__) else flag_of(rec, name)

    actions = []
    for name in names:
        f = by_name[name]
        flag, choices = flag_of(record, name), field_choices(record, f)
        base = without_none(types[name])
        value = getattr(defaults, name) if defaults is not None else f.default
        required = value is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        kw: dict = dict(dest=f.metadata.get("dest", name), default=value if keep_defaults and not required else None,
                        required=required)   # a field without a default: its flag must be given
        if "parse" in f.metadata:  # the flag's text, read by the record's own parser (metadata "parse")
            pass
        elif choices is not None:
            kw["choices"] = ["none" if v is None else v for v in choices]
            if keep_defaults and value is None:
                kw["default"] = "none" if None in choices else None
        elif base is bool and flag.startswith("--no-"):
            kw.update(action="store_const", const=False)
        elif base is bool and f.metadata.get("switch"):   # one --x flag that turns it on
            kw.update(action="store_const", const=True)
        elif base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif get_origin(base) is tuple and f.metadata.get("repeat"):   # --x A --x B: one value per flag
            kw.update(action="append", type=get_args(base)[0], default=None)
        elif get_origin(base) is tuple:
            kw.update(nargs="+", type=get_args(base)[0])
        elif base in (int, float):
            kw["type"] = base
        if "metavar" in f.metadata:
            kw["metavar"] = f.metadata["metavar"]
        text = f.metadata.get("help", name.replace("_", " "))
        text = render_fields(text() if callable(text) else text, in_help, record.__name__)
        if kw.get("const") is False:  # one --no-x flag: the help says what the field is, and that this turns it off
            text += f" (default {show(value)}; this flag turns it off)"
        elif "default" not in text and not f.metadata.get("switch"):   # a switch: off unless given
            text += default_note(f, choices) if default_note else _default_note(f, defaults, choices)
        actions.append(_add_argument(group, f, flag, text, kw))
    return actions


def _add_argument(group, f: dataclasses.Field, flag: str, text: str, kw: dict) -> argparse.Action:
    """The argument of field ``f``: by its ``flag``, or a positional one (metadata "positional") by
    its dest, optional when the field has a default."""
    if not f.metadata.get("positional"):
        return group.add_argument(flag, help=text, **kw)
    dest, required = kw.pop("dest"), kw.pop("required")
    return group.add_argument(dest, help=text, **kw, **({} if required else {"nargs": "?"}))


def _allows_none(record: type, f: dataclasses.Field) -> bool:
    """None is one of the field's values (a ``Literal`` with None, or its choices)."""
    hint = hints(record)[f.name]
    return (get_origin(hint) is Literal and None in get_args(hint)) or None in (field_choices(record, f) or ())


def given_values(args: argparse.Namespace, record: type, fields: tuple[str, ...] | None = None) -> dict:
    """The fields of ``record`` given on the command line (not None), as field values: "none" ->
    None where None is a choice, lists -> tuples."""
    names = flag_fields(record) if fields is None else fields
    by_name = {f.name: f for f in dataclasses.fields(record)}
    dests = {k: by_name[k].metadata.get("dest", k) for k in names}
    given = {k: getattr(args, dests[k]) for k in names if getattr(args, dests[k], None) is not None}
    for k, v in given.items():
        if isinstance(v, str) and v.lower() == "none" and _allows_none(record, by_name[k]):
            given[k] = None
        elif isinstance(v, list):
            given[k] = tuple(v)
    return given


def option(default: Any = dataclasses.MISSING, help: str = "", **metadata) -> Any:
    """A field of a command's options record: its ``default`` (none: the flag is required; such a
    field is keyword-only, so it may stand anywhere in the record), its ``help`` and the other
    metadata of the module docstring (flag, metavar, choices, dest, switch)."""
    return dataclasses.field(default=default, kw_only=default is dataclasses.MISSING,
                             metadata=dict(help=help, **metadata))
