"""Library errors in the user's words: the one place a record field becomes a command-line flag.

Library modules raise `sit.config.ConfigError(record, field, problem)` (they never spell a flag);
`sit.cli.main` passes every error of a command through `in_flags`, which writes each field the
error names as the flag that sets it (`flag_of`: the field's metadata, `sit.commands.flags`). A
field the command has no flag for keeps its record name (``TrainConfig.depth`` read back from a
saved config is not something the user typed).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

# records whose fields are set by one command's flags wherever the error is seen (`sit ema`: "train with
# --phema-sigmas"); other records' fields by the command that failed. ConvertOptions / ExtractOptions are the
# options records of `sit convert` / `sit extract` (named by the readers' advice; registered when their
# parsers are built): each field is the flag its metadata gives.
RECORD_COMMAND: dict[str, str] = {"TrainConfig": "train", "ConvertOptions": "convert", "ExtractOptions": "extract"}


def flag_of(record: str, field: str, options: Collection[str] | None = None) -> str | None:
    """The flag that sets ``record.field`` (`sit.commands.flags.flag_of`: the field's metadata; a
    plain argument (record "") or a command's own option: the option whose dest it is, where
    ``options`` says); None when ``options`` (the command's option strings) holds no such flag."""
    from sit.commands.flags import flag_of as record_flag
    from sit.commands.flags import record_class

    dests = getattr(options, "dests", {})
    if (not record or record_class(record) is None) and field in dests:
        flag = dests[field]
    else:
        flag = record_flag(record, field) if record else "--" + field.replace("_", "-")
    if options is not None and flag not in options:
        return None
    return flag


def fields_as_flags(text: str, records: Collection[str]) -> str:
    """``text`` (a message of a record that names its fields as ``Record.field``, such as
    `SampleConfig`'s checks) with the fields of ``records`` written as flags."""
    import re

    pattern = r"\b(" + "|".join(map(re.escape, records)) + r")\.(\w+)"
    return re.sub(pattern, lambda m: flag_of(m.group(1), m.group(2)) or m.group(0), text)


def in_flags(e: BaseException, command: str | None = None,
             options: Mapping[str, Collection[str]] | None = None) -> BaseException:
    """``e`` with the fields it names written as flags: a `ConfigError`, or an error carrying a
    ``template`` of `sit.config.render_fields`; any other error as it is. With ``options`` (each
    command's option strings) a field becomes a flag only where its command (``command``, or the
    one of `RECORD_COMMAND`) has that flag; otherwise it keeps its record name."""
    from sit.config import ConfigError, field_name, render_fields

    def name(record: str, field: str) -> str:
        own = None if options is None else options.get(RECORD_COMMAND.get(record, command), ())
        return flag_of(record, field, own) or field_name(record, field)

    if isinstance(e, ConfigError):
        return ValueError(e.render(name))
    template = getattr(e, "template", None)
    if isinstance(template, str):
        return type(e)(render_fields(template, name))
    return e


# a value the message names as unknown, and the values it allows (library messages: "unknown time
# grid 'logsnrr'; expected one of [...]"; argparse: "invalid choice: 'vpp' (choose from ...)")
_UNKNOWN = r"(?:unknown [\w -]+?|invalid choice:|no [\w -]+? at) '([^']+)'"
_ALLOWED = r"(?:expected one of|choose from|name an embedded encoder|known datasets:) \[?((?:'[^']*'(?:, )?)+)"


def with_suggestion(text: str) -> str:
    """``text`` with a "did you mean" after an unknown value it names, when one of the values it
    allows is close (``dpmpp2m`` -> ``dpmpp_2m``); unchanged otherwise."""
    import difflib
    import re

    if "did you mean" in text:
        return text
    m, allowed = re.search(_UNKNOWN, text), re.search(_ALLOWED, text)
    if not m or not allowed:
        return text
    close = difflib.get_close_matches(m.group(1), re.findall(r"'([^']*)'", allowed.group(1)), n=1, cutoff=0.6)
    if not close or close[0] == m.group(1):
        return text
    return text[:m.end()] + f" (did you mean {close[0]!r}?)" + text[m.end():]




def cli_message(e: BaseException, command: str | None = None,
                options: Mapping[str, Collection[str]] | None = None) -> str:
    """The one line `sit CMD: error: ...` shows for ``e``: its fields as the command's flags
    (`in_flags`; a record field a plain message spells, ``TrainConfig.repa_encoder``, too, where
    the command has its flag) and a "did you mean" for an unknown value (`with_suggestion`)."""
    import re

    from sit.commands.flags import RECORD_MODULES

    text = str(in_flags(e, command, options))
    own = None if options is None else options.get(command, ())

    def flag(m: re.Match) -> str:
        record, field = m.group(1), m.group(2)
        mine = None if options is None else options.get(RECORD_COMMAND.get(record, command), ())
        f = flag_of(record, field, mine)
        return f if f is not None and (own is None or f in own) else m.group(0)

    text = re.sub(r"\b(" + "|".join(RECORD_MODULES) + r")\.([a-z_][a-z0-9_]*)\b", flag, text)
    return with_suggestion(text)
