"""Issue 22 leftovers: a resumed run's saved thread count is bounded like a given one, a converted
checkpoint's recorded time input is read back (a contradicting kind refused), and a run folder
left by a run killed before its first checkpoint gets one agreeing answer from a fresh run and
from --resume."""

from __future__ import annotations

import pytest
import torch

from sit import config as C
from sit.config import ConfigError, ModelConfig, TrainConfig

TINY = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=16, depth=1, num_heads=1,
                   num_classes=10, learn_sigma=False)


def _cfg(out, **kw) -> TrainConfig:
    base = dict(out=str(out), dataset="digits", image_size=8, steps=2, global_batch=16, lr=1e-3, warmup_steps=0,
                log_every=1, ckpt_every=2, quality=False, samples_per_class=1, sample_steps=1, progress=False,
                num_workers=0, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_a_resumed_run_caps_its_saved_threads_to_this_machine(tmp_path, monkeypatch, capsys):
    from sit.train import Callbacks, train

    top = C.max_threads()
    real = C.usable_cores()
    monkeypatch.setattr(C, "usable_cores", lambda: real + 1)  # "another machine" with one more core
    run = train(_cfg(tmp_path / "r", threads=top + 1), TINY).run_dir  # allowed there
    monkeypatch.undo()
    capsys.readouterr()
    seen = []
    res = train(resume=run, steps=3, callbacks=Callbacks(after_step=lambda s: seen.append(torch.get_num_threads())))
    assert res.step == 3 and seen == [top]
    assert f"saved threads={top + 1} exceed this machine's bound of {top}" in capsys.readouterr().out
    # a count given now (fresh or as a resume override) above the bound is refused, before any folder is made
    with pytest.raises(ConfigError, match=r"TrainConfig\.threads must be 0 .* 1 \.\. "):
        train(_cfg(tmp_path / "fresh", threads=top + 1), TINY)
    assert not (tmp_path / "fresh").exists()
    with pytest.raises(ConfigError, match=r"TrainConfig\.threads"):
        train(resume=run, steps=4, overrides={"threads": top + 1})
