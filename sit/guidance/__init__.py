"""Guidance: the torch-free record `GuidanceConfig`, its rules, and `STRATEGIES`, the one table of
guidance strategies (paper section 3.3; Karras et al. 2024, "Guiding a diffusion model with a bad
version of itself").

    out^zeta(x, t; y) = zeta out(x, t; y) + (1 - zeta) other(x, t; y)

with zeta = ``GuidanceConfig.scale`` (1 = off, 0 = the other prediction alone; some codebases
scale by 1 + w, here w = zeta - 1). A strategy says what ``other`` is:
  cfg            the model itself with the null label (classifier-free guidance; the model needs
                 a null label: trained with label dropout), module `sit.guidance.cfg`;
  autoguidance   a weaker guide network of the same data, path, prediction and conditioning,
                 with the SAME label (record `Guide`: its checkpoint path and, once loaded by
                 `sit.generate.glue.load_guide`, its identity, network and RunMeta), module
                 `sit.guidance.autoguidance`.
``GuidanceConfig.guide`` holds the strategy's record (None: classifier-free guidance). Adding a
strategy = one module with ``wrap(model_fn, guidance, *, null_class, guide_fn)`` and one row
``STRATEGIES["name"] = StrategyRow(record type, "module:wrap", needs, help)``; the record's
fields carry their flag in their metadata (as `GuidanceConfig`'s do), `guidance_flag_fields`
lists them all and `guidance_from_flags` builds the record from flag values.

Options of every strategy: ``channels`` (guide only channels 0..k-1; the official SiT/DiT
``forward_with_cfg`` guides 3 of the 4 latent channels) and ``interval`` (guide only for paper
times t_lo <= t <= t_hi; `check_interval`, the one rule). The torch wrapper is
`sit.guidance.guided.GuidedModel`; this package never imports its modules (the rows name them as
strings), so nothing here pulls in torch and no import runs back up.

Math core, torch-free: imports `sit.config` only (the CLI builds its parsers from these records
without torch); never sit.models, the programs or commands.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any, Callable, Mapping

from sit.config import ConfigError, added_later

NEEDS_NULL_LABEL = "null label"   # the model's own null label (trained with label dropout)
NEEDS_NETWORK = "network"         # a second network, loaded into the record (`sit.generate.glue.load_guide`)
NEEDS_NOTHING = "nothing"


def check_scale(scale, record: str = "GuidanceConfig") -> float:
    """The guidance scale zeta as a float: a finite number (a bool is not one)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ConfigError(record, "scale", f"must be a finite number, the guidance scale zeta (got {scale!r})")
    return float(scale)


def check_channels(channels) -> int | None:
    if channels is not None and (not isinstance(channels, int) or isinstance(channels, bool) or channels < 1):
        raise ValueError(f"channels must be None (guide all) or an integer >= 1 (got {channels!r})")
    return channels


def check_interval(interval) -> tuple[float, float] | None:
    """The one rule for a guidance interval: None, or a pair 0 <= t_lo < t_hi <= 1 (paper time)."""
    if interval is None:
        return None
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"guidance interval must be a pair (t_lo, t_hi) (got {interval!r})") from None
    if not (0.0 <= lo < hi <= 1.0):
        raise ValueError(f"guidance interval must satisfy 0 <= t_lo < t_hi <= 1 (got {interval!r})")
    return (lo, hi)


def parse_interval(spec) -> tuple[float, float] | None:
    """'0.1,0.9' -> (0.1, 0.9): guidance only for t in [lo, hi] (paper time); None/'none' -> None."""
    if spec is None or spec == "" or spec == "none":
        return None
    try:
        return check_interval(spec.split(",") if isinstance(spec, str) else spec)
    except ValueError:
        raise ConfigError("GuidanceConfig", "interval", f"must be 'LO,HI' with 0 <= LO < HI <= 1 (got {spec!r})") from None


def parse_channels(spec) -> int | None:
    """'all' (None: guide every channel, the default) or a count k (guide channels 0..k-1;
    the official SiT/DiT forward_with_cfg uses 3 of the 4 latent channels)."""
    if spec is None or str(spec).lower() == "all":
        return None
    try:
        k = int(spec)
    except ValueError:
        raise ConfigError("GuidanceConfig", "channels", f"must be 'all' or a channel count such as 3 (got {spec!r})") from None
    if k < 1:
        raise ConfigError("GuidanceConfig", "channels", f"must be 'all' or a count >= 1 (got {spec!r})")
    return k


def flag_field(default, help: str, *, flag: str | None = None, metavar: str | None = None, parse=None, **extra):
    """A field of a guidance record with its flag in the metadata (as `sit.config._f`): ``help``
    (may name fields as {Record.field}), ``flag`` (None: no flag of its own), ``metavar`` and
    ``parse`` (the flag's text -> the field's value, where that is not the annotation's type)."""
    dest = flag.lstrip("-").replace("-", "_") if flag else None   # argparse's name of the flag (`flag_dest`)
    meta = dict(flag=flag, help=help, metavar=metavar, parse=parse, dest=dest, **extra)
    return dataclasses.field(default=default, metadata={k: v for k, v in meta.items() if v is not None})


@dataclasses.dataclass(frozen=True)
class Guide:
    """The autoguidance record: the guide checkpoint ``path`` (``--guide-ckpt``) and, once
    `sit.generate.glue.load_guide` has read it, its ``identity`` (`sit.checkpoints.identity`),
    ``net`` (prepared for sampling) and ``meta`` (its RunMeta). Only the identity is stored
    (`stored_form`): a sample set's identity names the guide's weights, not where they lay."""

    path: str = flag_field("", "autoguidance: guide with this weaker checkpoint of the same data, "
                           "path and classes (called with the same label) instead of the null label; "
                           "{GuidanceConfig.scale} is its zeta (default: CFG)", flag="--guide-ckpt", metavar="PATH")
    identity: str = ""
    net: Any = dataclasses.field(default=None, compare=False, repr=False)
    meta: Any = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.path, str) or not isinstance(self.identity, str):
            raise ValueError(f"Guide needs a checkpoint path and an identity as strings (got {self.path!r}, "
                             f"{self.identity!r})")

    @property
    def loaded(self) -> bool:
        return self.net is not None

    def stored_form(self) -> str:
        """What identities store of the guide (`sit.config.to_dict`): its identity."""
        if not self.identity:
            raise ValueError(f"the guide {self.path!r} is not loaded yet: its identity is unknown")
        return self.identity


@dataclasses.dataclass(frozen=True)
class StrategyRow:
    """One guidance strategy: ``record`` (the type of `GuidanceConfig.guide` that selects it; None:
    no record, the strategy of ``guide=None``), ``wrap`` ("module:function" or the function:
    ``wrap(model_fn, guidance, *, null_class, guide_fn)`` -> the guided prediction function),
    ``needs`` (`NEEDS_NULL_LABEL`, `NEEDS_NETWORK`: the record is loaded with a network first,
    `NEEDS_NOTHING`), ``help``."""

    record: type | None
    wrap: str | Callable
    needs: str
    help: str

    def wrap_fn(self) -> Callable:
        if callable(self.wrap):
            return self.wrap
        module, name = self.wrap.split(":")
        return getattr(importlib.import_module(module), name)


STRATEGIES: dict[str, StrategyRow] = {
    "cfg": StrategyRow(None, "sit.guidance.cfg:wrap", NEEDS_NULL_LABEL,
                       "classifier-free guidance: the model with the null label"),
    "autoguidance": StrategyRow(Guide, "sit.guidance.autoguidance:wrap", NEEDS_NETWORK,
                                "autoguidance: a weaker guide network with the same label"),
}


def strategy_of(guide) -> tuple[str, StrategyRow]:
    """(name, row) of the strategy whose record ``guide`` is (None: the row without a record)."""
    for name, row in STRATEGIES.items():
        if (guide is None and row.record is None) or (row.record is not None and type(guide) is row.record):
            return name, row
    records = [r.record.__name__ for r in STRATEGIES.values() if r.record is not None]
    raise ValueError(f"GuidanceConfig.guide must be None (classifier-free guidance) or the record of a guidance "
                     f"strategy ({', '.join(records)}) (got {guide!r})")


@dataclasses.dataclass(frozen=True)
class GuidanceConfig:
    """Guidance settings: ``scale`` zeta (1 = off), ``channels`` (None = all, k = guide channels
    0..k-1 only), ``interval`` (None = all t, else guide only for t_lo <= t <= t_hi in paper
    time), ``guide`` (the strategy's record, `STRATEGIES`: None = classifier-free guidance with
    the null label, a `Guide` = autoguidance). A record with guidance off is refused here, the one
    check: it would be loaded and never called."""

    scale: float = flag_field(1.0, "classifier-free guidance scale (1 = off)", flag="--cfg-scale", metavar="ZETA")
    channels: int | None = flag_field(None, "guide all channels (default) or the first K (official: 3)",
                                      flag="--cfg-channels", metavar="all|K", parse=parse_channels)
    interval: tuple[float, float] | None = flag_field(None, "guide only for t in [LO, HI] (default: all t)",
                                                      flag="--cfg-interval", metavar="LO,HI", parse=parse_interval)
    # CFG's sets keep the identity they had before autoguidance; set by a strategy record's own flags
    guide: Any = added_later(None, help="the guidance strategy's record (STRATEGIES); None: classifier-free guidance",
                             internal="set by the flags of a strategy's record, e.g. {Guide.path}",
                             flag="--guide-ckpt")  # the flag errors name it by (autoguidance's, the strategy with a flag)

    def __post_init__(self):
        object.__setattr__(self, "scale", check_scale(self.scale))
        check_channels(self.channels)
        object.__setattr__(self, "interval", check_interval(self.interval))
        strategy_of(self.guide)
        if self.guide is not None and not self.active:
            raise ConfigError("GuidanceConfig", "guide", "needs {scale} other than 1 (1 = guidance off: the guide would "
                              "never be called); give {scale}, e.g. 2")

    @property
    def active(self) -> bool:
        """False when guidance is off (zeta = 1): no unconditional or guide rows at all."""
        return self.scale != 1.0

    @property
    def row(self) -> StrategyRow:
        return strategy_of(self.guide)[1]

    @property
    def strategy(self) -> str:
        """"off", or the name of the strategy's row ("cfg", "autoguidance", ...)."""
        return "off" if not self.active else strategy_of(self.guide)[0]

    def check_model(self, *, discrete: bool, in_channels: int | None = None, has_classes: bool = True) -> None:
        """The rules that need the model (checked before sampling, and by the seam): an interval is
        in continuous time, not DiT's integer steps; at most the model's channels are guided; a
        strategy that uses the null label needs a class-conditional model."""
        if discrete and self.interval is not None:
            raise ConfigError("GuidanceConfig", "interval", "is in continuous time t; it does not apply to "
                              "{DiscreteSampleConfig.method} ddpm/ddim")
        if in_channels is not None and self.channels is not None and self.channels > in_channels:
            raise ConfigError("GuidanceConfig", "channels", f"{self.channels} exceeds the model's {in_channels} "
                              f"channel(s); give 'all' or 1..{in_channels}")
        if self.active and not has_classes and self.row.needs == NEEDS_NULL_LABEL:
            raise ConfigError("GuidanceConfig", "scale", f"{self.scale} needs a class-conditional model (this one has "
                              "no classes)")

    def wrap(self, model_fn: Callable, null_class: int | None = None, guide_fn: Callable | None = None) -> Callable:
        """``model_fn(x, t, y)`` guided by this config through its strategy's row, or ``model_fn``
        itself when guidance is off. ``null_class``: the model's null label (None: it has none);
        ``guide_fn``: the prediction function of the record's loaded network (`NEEDS_NETWORK`)."""
        row = self.row
        if (row.needs == NEEDS_NETWORK) != (guide_fn is not None):
            raise ValueError(f"{self.strategy} needs the guide's network: load the record first "
                             "(sit.generate.glue.load_guide)" if guide_fn is None else
                             f"a guide network was given but the guidance strategy {strategy_of(self.guide)[0]!r} "
                             "takes none")
        if not self.active:
            return model_fn
        if row.needs == NEEDS_NULL_LABEL and null_class is None:
            raise ConfigError("GuidanceConfig", "scale", f"{self.scale} needs a class-conditional model trained with "
                              "label dropout (it has no null label); use {guide} for autoguidance")
        return row.wrap_fn()(model_fn, self, null_class=null_class, guide_fn=guide_fn)


def guidance_flag_fields() -> list[tuple[type, dataclasses.Field]]:
    """(record, field) of every guidance flag: `GuidanceConfig`'s own fields with a flag, then each
    strategy record's (`STRATEGIES`), for the commands to generate their flags from."""
    records = [GuidanceConfig] + [r.record for r in STRATEGIES.values() if r.record is not None]
    return [(rec, f) for rec in records for f in dataclasses.fields(rec)
            if f.metadata.get("flag") and "internal" not in f.metadata]


def flag_dest(flag: str) -> str:
    """argparse's attribute name of a flag: --cfg-scale -> cfg_scale."""
    return flag.lstrip("-").replace("-", "_")


def guidance_from_flags(base: GuidanceConfig, values: Mapping[str, Any]) -> GuidanceConfig:
    """``base`` with the flags given in ``values`` (by argparse attribute; None or "" = not given):
    `GuidanceConfig`'s own fields, and a strategy's record where any of its flags is given (at most
    one strategy). Every rule is the record's own (`GuidanceConfig.__post_init__`)."""
    kw: dict[str, Any] = {}
    given: dict[type, str] = {}  # a strategy record -> the first of its flags given
    for rec, f in guidance_flag_fields():
        v = values.get(flag_dest(f.metadata["flag"]))
        if v is None or v == "":
            continue
        v = f.metadata["parse"](v) if "parse" in f.metadata else v
        if rec is GuidanceConfig:
            kw[f.name] = v
        else:
            kw.setdefault(rec, {})[f.name] = v
            given.setdefault(rec, f.metadata["flag"])
    records = [rec for rec in kw if isinstance(rec, type)]
    if len(records) > 1:
        names = {r.record: n for n, r in STRATEGIES.items() if r.record is not None}
        raise ValueError("guidance takes one strategy: " + " and ".join(f"{given[r]} ({names[r]})" for r in records)
                         + " were both given")
    for rec in records:
        kw["guide"] = rec(**kw.pop(rec))
    return dataclasses.replace(base, **kw)
