"""One rule for identities: a field added later carries `sit.config.ADDED_LATER` in its metadata and
is left out of run configs, sample-set identities and study identities while at its default. The
default identities of today (the demo's run config, the default sample sets, the default embedded
and a latent study) are stored in tests/data/identities.json and recomputed here, so any change to
an identity -- a new field without the marker, a changed default, a changed rule -- fails this test.
A change that is meant must say so (and regenerate the file with ``python tests/test_identities.py``)."""

import dataclasses
import json
import sys
from pathlib import Path

from sit.config import ADDED_LATER, ModelConfig, TrainConfig, _f, added_later, omitted_if_default, to_dict

STORED = Path(__file__).parent / "data" / "identities.json"


def current() -> dict:
    from sit.discrete import DiscreteSampleConfig
    from sit.generate.spec import SampleSpec
    from sit.guidance import GuidanceConfig, Guide
    from sit.study.cells import DEFAULT_BUDGET, select_cells
    from sit.study.run import Study, study_base
    from sit.study.scoring import ScoringConfig
    from sit.train.recipes import resolve_configs

    cfg, mc = resolve_configs({})
    base, bmc = study_base()
    specs = {"sample_set": SampleSpec(), "sample_set_discrete": SampleSpec(sample=DiscreteSampleConfig()),
             "sample_set_set": SampleSpec(guidance=GuidanceConfig(scale=2.0, guide=Guide("guide", identity="abc")), vae="vae", vae_sha256="def",
                                          vae_scale=0.2, vae_shift=0.1)}
    d = {
        "demo_run": {"train": to_dict(cfg), "model": to_dict(mc)},
        "demo_run_set": {"train": to_dict(dataclasses.replace(cfg, phema_sigmas=(0.05, 0.1), phema_every=25,
                                                              cosine_coeff=1.0, grad_checkpointing=True))},
        "defaults": {"train": to_dict(TrainConfig()), "model": to_dict(ModelConfig())},
        "study": Study(Path("studies/default"), base, bmc, DEFAULT_BUDGET, select_cells(None), ScoringConfig()).identity(),
        "study_latent": Study(Path("studies/latent"), dataclasses.replace(base, latents="latents/imagenet256"),
                              ModelConfig(), DEFAULT_BUDGET, select_cells("all"), ScoringConfig()).identity(),
    }
    for name, spec in specs.items():
        d[name], d[name + "_sha256"] = spec.to_json(), spec.sha256()
    return json.loads(json.dumps(d))


def test_stored_identities_are_recomputed_exactly():
    stored = json.loads(STORED.read_text())
    now = current()
    assert sorted(now) == sorted(stored)
    for name in stored:
        assert now[name] == stored[name], f"the identity {name!r} changed"


def test_added_later_fields_are_omitted_at_their_default_only():
    marked = omitted_if_default(TrainConfig)
    assert {"repa_encoder", "phema_sigmas", "cosine_coeff", "vae_scale"} <= marked
    assert TrainConfig.OMIT_IF_DEFAULT == ()  # the legacy list is empty: the marker is the rule
    d = to_dict(TrainConfig())
    assert not marked & set(d) and "lr" in d
    assert to_dict(TrainConfig(cosine_coeff=0.5))["cosine_coeff"] == 0.5

    @dataclasses.dataclass(frozen=True)
    class Inner:
        a: int = 1
        b: str | None = added_later(None)

    @dataclasses.dataclass(frozen=True)
    class Outer:
        inner: Inner = Inner()
        c: tuple = ()
        d: float = added_later(0.0)
        OMIT_IF_DEFAULT = ("c",)  # the legacy alias still works

    assert dataclasses.fields(Inner)[1].metadata[ADDED_LATER]
    assert to_dict(Outer()) == {"inner": {"a": 1}}  # at every level
    assert to_dict(Outer(Inner(b="x"), (1,), 2.0)) == {"inner": {"a": 1, "b": "x"}, "c": (1,), "d": 2.0}
    assert to_dict(Outer()) == {k: v for k, v in dataclasses.asdict(Outer()).items() if k == "inner"} | {"inner": {"a": 1}}


def test_a_new_field_keeps_the_stored_identity_only_when_marked():
    """What the stored identities catch: a field added without the marker."""
    stored = json.loads(STORED.read_text())["defaults"]["train"]

    @dataclasses.dataclass(frozen=True)
    class Unmarked(TrainConfig):
        new_option: int = 0

    @dataclasses.dataclass(frozen=True)
    class Marked(TrainConfig):
        new_option: int = _f(0, "run", "a new option", added_later=True)

    assert json.loads(json.dumps(to_dict(Unmarked()))) != stored
    assert json.loads(json.dumps(to_dict(Marked()))) == stored
    assert to_dict(Marked(new_option=3))["new_option"] == 3


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent.parent))
    STORED.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {STORED}")
