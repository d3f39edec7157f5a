"""The stored form of config records (stdlib only): the JSON round trip and the one identity rule.

One rule for identities (run configs, sample sets, studies): a field added after configs and
identities were first stored carries ``ADDED_LATER`` in its metadata (`added_later(default)`;
TrainConfig: ``_f(..., added_later=True)``) and is left out of `to_dict` -- every stored config,
manifest and identity hashed from them -- while it holds its default, so what was written before
the field existed stays byte-identical (``from_dict`` fills it back in). tests/data/identities.json
holds today's default identities; tests/test_identities.py recomputes them.

Re-exported by `sit.config`. Must not import: anything of sit.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from types import MappingProxyType
from typing import Any

ADDED_LATER = "added_later"


def added_later(default: Any, **metadata: Any):
    """A dataclass field added later (`ADDED_LATER`): omitted from identities while at ``default``."""
    return dataclasses.field(default=default, metadata=MappingProxyType({ADDED_LATER: True, **metadata}))


def omitted_if_default(cls) -> frozenset[str]:
    """The fields of dataclass ``cls`` that `to_dict` leaves out while they hold their default: those
    marked `ADDED_LATER`, and (a legacy alias, to be converted to the marker) any a class still lists
    in an ``OMIT_IF_DEFAULT`` tuple."""
    marked = {f.name for f in dataclasses.fields(cls) if f.metadata.get(ADDED_LATER)}
    return frozenset(marked | set(getattr(cls, "OMIT_IF_DEFAULT", ())))


def to_dict(cfg) -> dict[str, Any]:
    """The fields of dataclass ``cfg`` as a dict (nested dataclasses too, as ``dataclasses.asdict``),
    without the fields `omitted_if_default` while they hold their default, at every level."""
    omit = omitted_if_default(type(cfg))
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
            if not (f.name in omit and getattr(cfg, f.name) == f.default)}


def _plain(v: Any) -> Any:
    if callable(getattr(v, "stored_form", None)) and not isinstance(v, type):
        return v.stored_form()  # a record of something loaded is stored as its identity (sit.guidance.Guide)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return to_dict(v)
    if isinstance(v, tuple) and hasattr(v, "_fields"):  # a namedtuple, as dataclasses.asdict
        return type(v)(*[_plain(x) for x in v])
    if isinstance(v, (list, tuple)):
        return type(v)(_plain(x) for x in v)
    if isinstance(v, dict):
        return type(v)((_plain(k), _plain(x)) for k, x in v.items())
    return copy.deepcopy(v)


def from_dict(cls, d: dict[str, Any]):
    """Build dataclass ``cls`` from a dict, naming any unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; expected some of {sorted(names)}")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
    return cls(**kwargs)


def to_json(cfg) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)
