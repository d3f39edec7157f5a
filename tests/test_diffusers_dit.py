"""Official diffusers DiT folders (the facebook/DiT-XL-2-256 layout) read as DiT: `sit info` and
`sit sample --ckpt FOLDER` take them as the discrete DDPM with learned sigma, and sit's DDIM equals
diffusers' own DiTPipeline at the same noise."""

import json

import numpy as np
import pytest
import torch

from sit import checkpoints as store
from sit.cli import main

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def dit_folder(tmp_path_factory):
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    from sit.vae import VAE

    torch.manual_seed(0)
    tr = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8,
                               num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=1000,
                               norm_eps=1e-6)  # DiT's eps (diffusers' default is 1e-5)
    with torch.no_grad():
        for p in tr.parameters():
            p.normal_(0, 0.05)
        for block in tr.transformer_blocks[1:]:  # converted from DiT: one time / label embedder, copied per block
            block.norm1.emb.load_state_dict(tr.transformer_blocks[0].norm1.emb.state_dict())
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
                          clip_sample=False, set_alpha_to_one=True, steps_offset=0)
    vae = VAE.tiny_random(seed=1).model.eval()
    folder = tmp_path_factory.mktemp("dit") / "DiT-tiny"
    DiTPipeline(transformer=tr.eval(), vae=vae, scheduler=sched).save_pretrained(str(folder))
    assert not (folder / "sit_diffusers.json").exists()
    return folder


def test_info_reads_the_folder_as_dit(dit_folder, capsys):
    assert main(["info", str(dit_folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["path"], info["prediction"], info["time_input"], info["learn_sigma"]) == ("ddpm", "noise", "discrete", True)
    assert info["num_classes"] == 1000 and info["params"] == info["params_expected"]
    net, meta = store.load(dit_folder)
    assert meta.discrete and net.config.hidden_size == 32 and net.config.depth == 2
    assert store.identity(dit_folder) == store.identity(dit_folder)


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_sit_ddim_equals_diffusers_dit_pipeline(dit_folder, tmp_path, scale):
    from diffusers import DiffusionPipeline

    from sit.models.diffusers_pipeline import fix_time_embedding

    seed, labels, steps = 11, [1, 7], 1000  # DiT keeps round(linspace(0, 999, N)), DDIMScheduler j*(1000//N): equal at N = 1000
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(seed))  # what DiTPipeline draws
    np.save(tmp_path / "noise.npy", noise.numpy())
    assert main(["sample", "--ckpt", str(dit_folder), "--method", "ddim", "--num-steps", str(steps),
                 "--labels", ",".join(map(str, labels)), "--num-samples", "2", "--cfg-scale", str(scale),
                 "--cfg-channels", "4", "--noise", str(tmp_path / "noise.npy"), "--save-latents", "npy",
                 "--out", str(tmp_path / "s"), "--no-progress", "--threads", "1"]) == 0  # its vae/ decodes
    lat = torch.from_numpy(np.load(tmp_path / "s" / "latents.npy"))

    pipe = DiffusionPipeline.from_pretrained(str(dit_folder))
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe).__name__ == "DiTPipeline"
    run = dict(class_labels=labels, guidance_scale=scale, num_inference_steps=steps, output_type="np")
    bare = pipe(generator=torch.Generator().manual_seed(seed), **run).images
    fix_time_embedding(pipe.transformer)  # DiT's time frequencies 10000^(-k/128) (diffusers: k/127)
    want = pipe(generator=torch.Generator().manual_seed(seed), **run).images
    with torch.no_grad():
        got = (pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    got = got.permute(0, 2, 3, 1).numpy()
    err = np.abs(got - want).max()
    assert err < 1e-5
    assert np.abs(bare - want).max() > 20 * err  # diffusers' own time embedding is another network
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert str(dit_folder / "vae") in json.dumps(manifest)  # the folder's VAE, named in the set's identity


def test_a_folder_that_is_not_dits_ddpm_is_refused(dit_folder, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(dit_folder, bad)
    cfg = json.loads((bad / "scheduler" / "scheduler_config.json").read_text())
    cfg["beta_schedule"] = "scaled_linear"
    (bad / "scheduler" / "scheduler_config.json").write_text(json.dumps(cfg))
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DiT's DDPM" in err[0]
