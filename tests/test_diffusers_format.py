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


@pytest.mark.parametrize("method,steps,scale,interval", [("euler", 5, 1.0, None), ("heun", 3, 2.5, None),
                                                         ("dpmpp_2m", 4, 2.5, None), ("dpmpp_2m", 5, 3.0, (0.3, 0.8))])
def test_pipeline_and_sit_sample_agree_and_round_trip(run, tmp_path, method, steps, scale, interval):
    from diffusers import DiffusionPipeline

    noise = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    np.save(tmp_path / "noise.npy", noise.numpy())
    extra = ["--method", method, "--num-steps", str(steps), "--cfg-scale", str(scale)]
    if interval:
        extra += ["--cfg-interval", f"{interval[0]},{interval[1]}"]
    from_run = _sample(run[0], tmp_path / "a", extra)
    from_export = _sample(run[1], tmp_path / "b", extra)
    np.testing.assert_array_equal(from_export, from_run)  # same weights, same code: bit-identical

    pipe = DiffusionPipeline.from_pretrained(str(run[1]), trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.sit_meta["source_sha256"] == store.identity(run[0])
    got = pipe(class_labels=[1, 4, 7], num_inference_steps=steps, guidance_scale=scale, method=method, latents=noise,
               guidance_interval=interval, output_type="latent").images
    assert np.abs(got.numpy() - from_run).max() < 1e-5
    if interval:  # the interval matters: guiding everywhere gives another sample
        every = pipe(class_labels=[1, 4, 7], num_inference_steps=steps, guidance_scale=scale, method=method,
                     latents=noise, output_type="latent").images
        assert np.abs(every.numpy() - from_run).max() > 1e-3
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


# ------------------------------------------------------------------------------------------------
# the export is a folder of its own kind, and every byte that says how to read it is verified
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [("prediction", "score"), ("path", "gvp"), ("weights", "model")])
def test_a_one_field_edit_of_sit_diffusers_json_is_refused(run, tmp_path, capsys, field, value):
    bad = _copy(run[1], tmp_path / "bad")
    meta = json.loads((bad / dfmt.METADATA).read_text())
    meta[field] = value
    (bad / dfmt.METADATA).write_text(json.dumps(meta, indent=2))
    with pytest.raises(dfmt.DiffusersFormatError, match="was changed after it was written"):
        store.load(bad)
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sit_diffusers.json was changed" in err[0]


def test_an_export_without_the_metadata_hash_is_refused(run, tmp_path):
    old = _copy(run[1], tmp_path / "v1")
    meta = json.loads((old / dfmt.METADATA).read_text())
    meta.pop("sha256")
    meta["format_version"] = 1
    (old / dfmt.METADATA).write_text(json.dumps(meta))
    with pytest.raises(dfmt.DiffusersFormatError, match="export it again"):
        store.load(old)


def test_convert_refuses_an_export_inside_a_run_or_checkpoint_folder(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    ck = ckpt_mod.save_model(_net(), run_dir / "checkpoints" / "step-0000003.safetensors", dict(META, step=3))
    ckdir = tmp_path / "ckdir"  # a training checkpoint copied out of its run (its manifest names the kind)
    ckdir.mkdir()
    (ckdir / "manifest.json").write_text(json.dumps({"kind": "checkpoint", "step": 3, "files": {}}))
    for out in (run_dir / "diff", run_dir / "checkpoints" / "diff", ckdir / "diff"):
        assert main(["convert", str(ck), "--to", "diffusers", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is inside" in err[0] and "OUT" in err[0], err
        assert not out.exists()


def test_sample_and_train_refuse_an_export_folder(run, tmp_path, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in run[1].iterdir()}
    rc = main(["sample", "--ckpt", str(run[0]), "--num-samples", "1", "--out", str(run[1]), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "diffusers export folder" in err[0] and "--out" in err[0]
    rc = main(["train", "--out", str(run[1]), "--steps", "1", "--overwrite"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "diffusers export folder" in err[0]
    assert {p.name: p.stat().st_mtime_ns for p in run[1].iterdir()} == before
    store.load(run[1])  # still verifies


def test_export_folder_has_the_ordinary_mode_and_weights_model_is_not_silently_ema(run, tmp_path, capsys):
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert run[1].stat().st_mode & 0o777 == 0o777 & ~umask
    assert json.loads((run[1] / dfmt.METADATA).read_text())["weights"] == "ema"
    rc = main(["sample", "--ckpt", str(run[1]), "--weights", "model", "--num-samples", "1",
               "--out", str(tmp_path / "s"), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--weights model" in err[0], err
    assert "--prefer model" in err[0]
    # exported with --prefer model, --weights model is honoured: the raw weights, not the EMA
    src = tmp_path / "two"
    (src / "checkpoints").mkdir(parents=True)
    step = src / "checkpoints" / "step-0000005"
    ckpt_mod.save_model(_net(seed=3), step / "ema.safetensors", dict(META, step=5))
    ckpt_mod.save_model(_net(seed=4), step / "model.safetensors", dict(META, step=5))
    (step / "ema.json").rename(step / "config.json")
    (step / "model.json").unlink()
    out = tmp_path / "exp-model"
    assert main(["convert", str(step), "--to", "diffusers", str(out), "--prefer", "model"]) == 0
    net, meta = store.load(out, weights="model")
    raw, _ = store.load(step, weights="model")
    assert meta.weights == "model"
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), raw.state_dict().values()))


def test_pipeline_outputs_like_a_diffusers_pipeline(run):
    from diffusers import DiffusionPipeline
    from PIL import Image

    pipe = DiffusionPipeline.from_pretrained(str(run[1]), trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    kw = dict(class_labels=[2, 5], num_inference_steps=3, latents=noise)
    lat = pipe(**kw, output_type="latent").images
    pil = pipe(**kw).images  # the default, as DiTPipeline's
    assert isinstance(pil, list) and len(pil) == 2 and isinstance(pil[0], Image.Image) and pil[0].size == (8, 8)
    arr = pipe(**kw, output_type="np").images
    pt = pipe(**kw, output_type="pt").images
    want = ((lat / 2 + 0.5).clamp(0, 1))
    assert arr.shape == (2, 8, 8, 3) and 0 <= arr.min() and arr.max() <= 1
    torch.testing.assert_close(pt, want, rtol=0, atol=0)
    np.testing.assert_array_equal(arr, want.permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(np.asarray(pil[1]), (arr[1] * 255).round().astype(np.uint8))
    (tup,) = pipe(**kw, output_type="pt", return_dict=False)
    torch.testing.assert_close(tup, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown output_type"):
        pipe(**kw, output_type="jpeg")


def test_pipeline_file_says_how_to_load_it_and_checks_its_metadata(run, tmp_path):
    from diffusers import DiffusionPipeline

    text = (run[1] / dfmt.PIPELINE_FILE).read_text()
    usage = [line for line in text.splitlines() if "from_pretrained(" in line and "pipe =" in line]
    assert usage and all("trust_remote_code=True" in line for line in usage)
    bad = _copy(run[1], tmp_path / "edited")
    meta = json.loads((bad / dfmt.METADATA).read_text())
    meta["prediction"] = "velocity "  # any edit
    (bad / dfmt.METADATA).write_text(json.dumps(meta))
    pipe = DiffusionPipeline.from_pretrained(str(bad), trust_remote_code=True)
    with pytest.raises(ValueError, match="was changed after it was written"):
        pipe(class_labels=[1], num_inference_steps=1)


def test_a_latent_runs_export_carries_its_vae_and_decodes_in_the_runs_latent_space(tmp_path):
    from diffusers import DiffusionPipeline

    from sit.vae import VAE

    vae = VAE.tiny_random(seed=2)
    vae.model.save_pretrained(str(tmp_path / "vae"))
    # a run trained with an overridden latent space (scale 0.5, shift 0.1; its VAE's config says 0.18215, 0)
    data = {"kind": "images", "vae": str(tmp_path / "vae"), "scale_factor": 0.5, "shift_factor": 0.1,
            "vae_config": {"scaling_factor": vae.model.config.scaling_factor, "shift_factor": 0.0}}
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    ckpt_mod.save_model(_net(in_channels=4), run_dir / "checkpoints" / "step-0000002.safetensors", dict(META, step=2, data=data))
    out = tmp_path / "exp"
    assert main(["convert", str(run_dir), "--to", "diffusers", str(out)]) == 0
    meta = json.loads((out / dfmt.METADATA).read_text())
    assert "vae/diffusion_pytorch_model.safetensors" in meta["files"] and meta["latent_space"]["shift_factor"] == 0.1
    noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    np.save(tmp_path / "noise.npy", noise.numpy())
    lat = _sample(run_dir, tmp_path / "s", ["--method", "dpmpp_2m", "--num-steps", "3", "--vae", str(tmp_path / "vae")])

    pipe = DiffusionPipeline.from_pretrained(str(out), trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    pt = pipe(class_labels=[1, 4, 7], num_inference_steps=3, method="dpmpp_2m", latents=noise, output_type="pt").images
    assert pt.shape == (3, 3, 16, 16)  # images, through the export's own vae/
    sit_vae = VAE.from_pretrained(str(tmp_path / "vae"), scale_factor=0.5, shift_factor=0.1)
    want = (sit_vae.decode(torch.from_numpy(lat)) / 2 + 0.5).clamp(0, 1)  # sit's decode of sit's samples
    assert (pt - want).abs().max() < 1e-4
    plain = (VAE.from_pretrained(str(tmp_path / "vae")).decode(torch.from_numpy(lat)) / 2 + 0.5).clamp(0, 1)
    assert (pt - plain).abs().max() > 1e-3  # the VAE config's own space would decode something else
    assert len(pipe(class_labels=[1, 4, 7], num_inference_steps=3, method="dpmpp_2m", latents=noise).images) == 3
