"""`sit convert RUN --to diffusers OUT` and reading it back: diffusers' DiTTransformer2DModel computes
sit's forward, the exported SiTPipeline samples what `sit sample` samples, `sit sample --ckpt OUT`
equals sampling the run, and a changed folder is refused with one line."""

import json

import numpy as np
import pytest
import torch

import sit.models.checkpoint as ckpt_mod
from sit import checkpoints as store
from sit.cli import main
from sit.config import ModelConfig
from sit.models import diffusers_format as dfmt
from sit.models.sit import SiT

diffusers = pytest.importorskip("diffusers")


def _net(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=2, num_heads=4, num_classes=10)
    net = SiT(ModelConfig(**{**cfg, **kw}))
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)  # away from the all-zero adaLN-Zero init
    return net.eval()


META = {"path": "linear", "prediction": "velocity", "time_input": "continuous"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder (checkpoints/step-0000007.safetensors) and its diffusers export."""
    d = tmp_path_factory.mktemp("dfrun")
    (d / "run" / "checkpoints").mkdir(parents=True)
    ckpt_mod.save_model(_net(), d / "run" / "checkpoints" / "step-0000007.safetensors", dict(META, step=7))
    assert main(["convert", str(d / "run"), "--to", "diffusers", str(d / "out")]) == 0
    return d / "run", d / "out"


def _dit(folder, fix=True):
    from diffusers import DiTTransformer2DModel

    from sit.models.diffusers_pipeline import fix_time_embedding

    m = DiTTransformer2DModel.from_pretrained(str(folder / "transformer")).eval()
    if fix:
        assert fix_time_embedding(m) == m.config.num_layers  # one time_proj per block
    return m


def test_diffusers_transformer_equals_sit_forward(run):
    net, _ = store.load(run[0])
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    tau = torch.tensor([0.0, 0.25, 0.9, 1.0])
    y = torch.tensor([0, 3, 9, 10])  # 10 = the null label
    with torch.no_grad():
        want = net(x, tau, y)
        got = _dit(run[1])(x, timestep=tau, class_labels=y).sample
        bare = _dit(run[1], fix=False)(x, timestep=tau, class_labels=y).sample
    assert got.shape == want.shape == (4, 6, 8, 8)
    assert (got - want).abs().max() < 1e-5
    # diffusers' own time embedding (frequencies 10000^(-k/127)) is measurably off: the fix is needed
    assert (bare - want).abs().max() > 1e-5


@pytest.mark.parametrize("kw", [dict(class_dropout_prob=0.0), dict(learn_sigma=False), dict(num_heads=2, depth=3)])
def test_state_dict_round_trip_is_exact(tmp_path, kw):
    net = _net(seed=2, **kw)
    out = dfmt.export_diffusers(net, dict(META, model={}), tmp_path / "o", source_sha256="0" * 64)
    back, meta = dfmt.load_diffusers(out)
    assert back.config == net.config and meta["path"] == "linear"
    for k, v in net.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    if not kw.get("class_dropout_prob", 0.1):  # diffusers always holds a null row: a zero one was added
        table = _dit(out).transformer_blocks[0].norm1.emb.class_embedder.embedding_table.weight
        assert table.shape[0] == 11 and not table[-1].any()


def _sample(ckpt, out, extra=()):
    assert main(["sample", "--ckpt", str(ckpt), "--num-samples", "3", "--labels", "1,4,7",
                 "--noise", str(out.parent / "noise.npy"), "--save-latents", "npy", "--out", str(out),
                 "--no-progress", "--threads", "1", *extra]) == 0
    return np.load(out / "latents.npy")


@pytest.mark.parametrize("method,steps,scale", [("euler", 5, 1.0), ("heun", 3, 2.5)])
def test_pipeline_and_sit_sample_agree_and_round_trip(run, tmp_path, method, steps, scale):
    from diffusers import DiffusionPipeline

    noise = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    np.save(tmp_path / "noise.npy", noise.numpy())
    extra = ["--method", method, "--num-steps", str(steps), "--cfg-scale", str(scale)]
    from_run = _sample(run[0], tmp_path / "a", extra)
    from_export = _sample(run[1], tmp_path / "b", extra)
    np.testing.assert_array_equal(from_export, from_run)  # same weights, same code: bit-identical

    pipe = DiffusionPipeline.from_pretrained(str(run[1]), trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.sit_meta["source_sha256"] == store.identity(run[0])
    got = pipe(class_labels=[1, 4, 7], num_inference_steps=steps, guidance_scale=scale, method=method, latents=noise).images
    assert np.abs(got.numpy() - from_run).max() < 1e-5
    assert np.abs(from_run - noise.numpy()).max() > 0.1  # the samplers moved


def test_export_metadata_and_identity(run):
    meta = json.loads((run[1] / dfmt.METADATA).read_text())
    assert (meta["path"], meta["prediction"], meta["time_input"], meta["learn_sigma"]) == ("linear", "velocity", "continuous", True)
    assert meta["source_sha256"] == store.identity(run[0])
    assert meta["run"]["step"] == 7
    sched = json.loads((run[1] / dfmt.SCHEDULER_CONFIG).read_text())
    assert sched["_class_name"] == "FlowMatchEulerDiscreteScheduler" and sched["shift"] == 1.0
    _, rm = store.load(run[1])
    assert rm.step == 7 and rm.path == "linear" and rm.model.num_classes == 10
    assert store.identity(run[1]) != store.identity(run[0])  # its own files, stable
    assert store.identity(run[1]) == store.identity(run[1])


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_changed_folder_is_refused(run, tmp_path, capsys):
    bad = _copy(run[1], tmp_path / "bad")
    w = bad / dfmt.WEIGHTS
    data = bytearray(w.read_bytes())
    data[-1] ^= 1
    w.write_bytes(bytes(data))
    with pytest.raises(dfmt.DiffusersFormatError, match="sha256 mismatch"):
        store.load(bad)
    rc = main(["sample", "--ckpt", str(bad), "--num-samples", "1", "--out", str(tmp_path / "s"), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sha256 mismatch" in err[0]


def test_per_block_embedders_must_agree(tmp_path):
    net = _net()
    sd = dfmt.to_diffusers(net.state_dict(), net.config)
    sd["transformer_blocks.1.norm1.emb.timestep_embedder.linear_1.bias"] += 1
    with pytest.raises(dfmt.DiffusersFormatError, match="block 1's timestep_embedder.linear_1.bias differs"):
        dfmt.from_diffusers(sd, net.config)
    del sd["proj_out_2.bias"]
    with pytest.raises(dfmt.DiffusersFormatError, match="missing"):
        dfmt.from_diffusers(sd, net.config)


def test_convert_refuses_existing_folder_and_discrete_models(run, tmp_path, capsys):
    assert main(["convert", str(run[0]), "--to", "diffusers", str(run[1])]) == 2
    assert "exists" in capsys.readouterr().err
    dit = ckpt_mod.save_model(_net(), tmp_path / "dit", {"path": "ddpm", "prediction": "noise", "time_input": "discrete"})
    assert main(["convert", str(dit), "--to", "diffusers", str(tmp_path / "o")]) == 2
    assert "DDPM steps" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_mlp_ratio_other_than_4_is_refused(tmp_path):
    net = _net(mlp_ratio=2.0)
    with pytest.raises(dfmt.DiffusersFormatError, match="mlp_ratio 4"):
        dfmt.export_diffusers(net, dict(META), tmp_path / "o", source_sha256="0" * 64)
    assert not (tmp_path / "o").exists()


def test_pipeline_refuses_other_paths(tmp_path):
    from diffusers import DiffusionPipeline

    net = _net()
    out = dfmt.export_diffusers(net, dict(META, path="gvp"), tmp_path / "o", source_sha256="0" * 64)
    pipe = DiffusionPipeline.from_pretrained(str(out), trust_remote_code=True)
    with pytest.raises(ValueError, match="Linear-path velocity models only"):
        pipe(class_labels=[1], num_inference_steps=2)


def test_info_reads_the_export(run, capsys):
    assert main(["info", str(run[1]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == info["params_expected"] and info["step"] == 7 and info["path"] == "linear"
