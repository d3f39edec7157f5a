"""TrainConfig's preview sampler: a continuous row of the sampler table (names and kinds from the
torch-free `sit.sampler_kinds`); an average-velocity row needs the MeanFlow objective."""

from __future__ import annotations

from typing import Any

from sit.field_errors import ConfigError


def preview_methods() -> tuple[str, ...]:
    """The samplers a preview may use: every continuous row of `sit.samplers.SAMPLERS` (names and
    kinds from the torch-free `sit.sampler_kinds`)."""
    from sit.sampler_kinds import continuous_names

    return continuous_names()


def check_preview_method(name: Any) -> None:
    """ConfigError unless ``name`` is a continuous row of the sampler table (`sit.sampler_kinds`:
    torch-free for the built-in rows)."""
    from sit.sampler_kinds import kind_of

    kind = kind_of(name) if isinstance(name, str) else None
    if kind is None or kind == "discrete":
        what = "is a discrete-time (DiT) sampler" if kind else "is not a row of the sampler table"
        raise ConfigError("TrainConfig", "sample_method", f"{name!r} {what}; expected one of {list(preview_methods())}")


def check_preview(cfg: Any) -> None:
    """The preview sampler is a continuous row of the table; an average-velocity row needs MeanFlow."""
    from sit.sampler_kinds import kind_of

    check_preview_method(cfg.sample_method)
    if cfg.objective != "meanflow" and kind_of(cfg.sample_method) == "average":
        raise ConfigError("TrainConfig", "sample_method", f"{cfg.sample_method!r} jumps with an average velocity: "
                          "it needs {objective} 'meanflow'")
