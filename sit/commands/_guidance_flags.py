"""The guidance flags of `sit sample` and `sit sweep`, generated from the torch-free guidance records
(`sit.guidance.guidance_flag_fields`: `GuidanceConfig`'s fields and each strategy record's, e.g.
`Guide.path` = ``--guide-ckpt``): flag, help, metavar and how the text is read all come from the
field's metadata, so a strategy added by one row brings its flags. The values go back through
`sit.guidance.guidance_from_flags` (`sit.commands.sample.guidance_from_args`)."""

from __future__ import annotations

_TYPES = {"float": float, "int": int, "str": str}


def add_guidance_arguments(group) -> None:
    """One argument per guidance field with a flag; no argparse default (a flag not given leaves the
    preset's or the record's value), the record's default named in the help."""
    from sit.config import render_fields
    from sit.guidance import GuidanceConfig, guidance_flag_fields

    fields = guidance_flag_fields()
    flags = {(rec.__name__, f.name): f.metadata["flag"] for rec, f in fields}

    def name(record: str, field: str) -> str:
        return flags.get((record, field), field)

    for rec, f in fields:
        m = f.metadata
        text = render_fields(m["help"], name, rec.__name__)
        if rec is GuidanceConfig and "default" not in text:
            text = text[:-1] + f"; default {f.default})" if text.endswith(")") else f"{text} (default {f.default})"
        kind = str if "parse" in m else _TYPES.get(str(f.type), str)
        group.add_argument(m["flag"], type=kind, metavar=m.get("metavar"), help=text)
