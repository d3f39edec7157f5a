"""The SiT network (sit/models/sit.py) and its paper-time adapter (sit/models/field.py)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference_forward import reference_forward

from sit.config import MODEL_PRESETS, ModelConfig
from sit.models.field import ModelField
from sit.models.sit import SiT, forward_flops, param_count, sincos_pos_embed_2d, timestep_embedding

# the official models.py's state_dict keys and shapes (facts, one "key<TAB>shape" per line), shipped with the tests
REF = Path(__file__).resolve().parent / "data" / "sit_state_dict"


TINY = ModelConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=10)


def tiny(seed=0, scale=0.1, **overrides) -> SiT:
    """A tiny SiT with all weights randomised (a fresh one outputs exactly zero)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**TINY.__dict__, **overrides})
    net = SiT(cfg)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.normal_(0.0, scale)
    return net.eval()


def inputs(B=3, cfg=TINY, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    t = torch.rand(B, generator=g)
    y = torch.randint(0, cfg.num_classes, (B,), generator=g)
    return x, t, y


# ---------------------------------------------------------------- structure
@pytest.mark.parametrize("name,tsv", [("SiT-XL/2", "SiT-XL-2.tsv"), ("SiT-S/2", "SiT-S-2.tsv")])
def test_state_dict_keys_and_shapes_equal_official(name, tsv):
    ref_file = REF / tsv
    ref = [tuple(line.split("\t")) for line in ref_file.read_text().splitlines() if line.strip()]
    with torch.device("meta"):
        net = SiT(MODEL_PRESETS[name])
    mine = [(k, "x".join(map(str, v.shape))) for k, v in net.state_dict().items()]
    assert mine == ref


def _count_by_hand(depth, D, p, C=4, img=32, classes=1000, learn_sigma=True):
    """Parameter count of the official architecture, term by term (DiT/SiT models.py)."""
    T = (img // p) ** 2
    out = 2 * C if learn_sigma else C
    per_block = (D * 3 * D + 3 * D) + (D * D + D) + (D * 4 * D + 4 * D) + (4 * D * D + D) + (D * 6 * D + 6 * D)
    embed = T * D + (C * p * p * D + D) + (256 * D + D) + (D * D + D) + (classes + 1) * D
    final = (D * 2 * D + 2 * D) + (D * p * p * out + p * p * out)
    return embed + depth * per_block + final


def test_parameter_counts_all_twelve_configs():
    published_millions = {"S": 33, "B": 130, "L": 458, "XL": 675}  # DiT / SiT papers
    for name, cfg in MODEL_PRESETS.items():
        with torch.device("meta"):
            net = SiT(cfg)
        n = sum(p.numel() for p in net.parameters())
        assert n == _count_by_hand(cfg.depth, cfg.hidden_size, cfg.patch_size) == param_count(cfg), name
        size = name.split("-")[1].split("/")[0]
        assert abs(n / 1e6 - published_millions[size]) < 1, name
    assert param_count(MODEL_PRESETS["SiT-XL/2"]) == 675_129_632


def test_forward_flops_match_published_gflops():
    # DiT/SiT tables report multiply-adds as "Gflops" (S/2 6.1, B/2 23.0, L/2 80.7, XL/2 118.6)
    published = {"SiT-S/2": 6.1, "SiT-B/2": 23.0, "SiT-L/2": 80.7, "SiT-XL/2": 118.6}
    for name, g in published.items():
        assert forward_flops(MODEL_PRESETS[name], 1) / 2e9 == pytest.approx(g, abs=0.05), name


def test_null_class_row_only_with_label_dropout():
    net = SiT(ModelConfig(**{**TINY.__dict__, "class_dropout_prob": 0.0}))
    assert net.y_embedder.embedding_table.weight.shape[0] == TINY.num_classes
    assert SiT(TINY).y_embedder.embedding_table.weight.shape[0] == TINY.num_classes + 1


# ---------------------------------------------------------------- fixed embeddings
def test_pos_embed_is_official_column_first_sincos():
    D, g = 16, 3
    table = sincos_pos_embed_2d(D, g)
    # oracle: the official construction with numpy (meshgrid of (w, h): first half from grid[0])
    gw, gh = np.arange(g, dtype=np.float32), np.arange(g, dtype=np.float32)
    grid = np.stack(np.meshgrid(gw, gh), axis=0).reshape(2, -1)
    omega = 1.0 / 10000 ** (np.arange(D // 4, dtype=np.float64) / (D / 4))

    def one(pos):
        out = np.outer(pos, omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    oracle = np.concatenate([one(grid[0]), one(grid[1])], axis=1)
    np.testing.assert_allclose(table.numpy(), oracle, rtol=0, atol=1e-12)
    # closed form at token (row 1, column 2): first quarter sin(column * w_k)
    n = 1 * g + 2
    assert table[n, 0].item() == pytest.approx(math.sin(2.0))
    assert table[n, D // 2].item() == pytest.approx(math.sin(1.0))
    net = SiT(ModelConfig(**{**TINY.__dict__, "hidden_size": 16, "num_heads": 2, "input_size": 6}))
    torch.testing.assert_close(net.pos_embed[0], table.float(), rtol=0, atol=0)
    assert not net.pos_embed.requires_grad


def test_timestep_embedding_cos_then_sin_unscaled():
    t = torch.tensor([0.0, 0.3, 1.0])
    e = timestep_embedding(t, 256)
    k = torch.arange(128, dtype=torch.float32)
    f = torch.exp(-math.log(10000.0) * k / 128)
    torch.testing.assert_close(e[:, :128], torch.cos(t[:, None] * f))
    torch.testing.assert_close(e[:, 128:], torch.sin(t[:, None] * f))


# ---------------------------------------------------------------- forward semantics
def test_fresh_model_outputs_exact_zero():
    torch.manual_seed(0)
    net = SiT(TINY)
    x, t, y = inputs()
    for mode in (net.train(), net.eval()):
        out = mode(x, t, y)
        assert out.shape == (3, 8, 8, 8)
        assert torch.equal(out, torch.zeros_like(out))


def test_matches_unfused_official_forward():
    net = tiny()
    x, t, y = inputs()
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, y), reference_forward(net, x, t, y), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(net(x, t, y), reference_forward(net, x, t, y, attn="sdpa"), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="attn"):
        reference_forward(net, x, t, y, attn="flash")


def test_batch_equals_items_one_by_one():
    net = tiny()
    x, t, y = inputs(B=4)
    with torch.no_grad():
        full = net(x, t, y)
        rows = torch.cat([net(x[i : i + 1], t[i : i + 1], y[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(full, rows, rtol=1e-5, atol=1e-6)


def test_label_dropout_and_null_label():
    net = tiny()
    x, t, y = inputs(B=4)
    null = torch.full_like(y, TINY.num_classes)
    with torch.no_grad():
        forced = net(x, t, y, force_drop_ids=torch.tensor([1, 0, 1, 0]))
        expect = net(x, t, torch.where(torch.tensor([True, False, True, False]), null, y))
        torch.testing.assert_close(forced, expect, rtol=0, atol=0)
        torch.testing.assert_close(net(x, t, None), net(x, t, null), rtol=0, atol=0)
        # train mode drops labels with probability 0.1: over many rows about 10% become null
        net.train()
        torch.manual_seed(0)
        labels = torch.zeros(20000, dtype=torch.long)
        dropped = (net.y_embedder.token_drop(labels) == TINY.num_classes).float().mean().item()
        assert abs(dropped - 0.1) < 0.01


def test_bad_input_shape_is_named():
    net = SiT(TINY)
    with pytest.raises(ValueError, match=r"\(B, 4, 8, 8\)"):
        net(torch.zeros(1, 3, 8, 8), torch.zeros(1), torch.zeros(1, dtype=torch.long))


def test_any_size_channels_classes():
    cfg = ModelConfig(input_size=4, patch_size=4, in_channels=1, hidden_size=32, depth=1, num_heads=2, num_classes=3, learn_sigma=False)
    net = SiT(cfg)
    out = net(torch.randn(2, 1, 4, 4), torch.rand(2), torch.tensor([0, 2]))
    assert out.shape == (2, 1, 4, 4)


def test_bf16_close_to_fp32():
    net = tiny(scale=0.05)
    x, t, y = inputs()
    with torch.no_grad():
        ref = net(x, t, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = net(x, t, y).float()
        low = SiT(TINY).eval()
        low.load_state_dict(net.state_dict())
        low = low.to(torch.bfloat16)(x, t, y).float()
    scale = ref.abs().max()
    assert (auto - ref).abs().max() < 0.03 * scale
    assert (low - ref).abs().max() < 0.05 * scale


def test_grad_checkpointing_same_gradients():
    x, t, y = inputs()
    grads = []
    for ckpt in (False, True):
        net = tiny().train()
        net.grad_checkpointing = ckpt
        torch.manual_seed(5)  # same label dropout draw
        net(x, t, y).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])


# ---------------------------------------------------------------- paper-time adapter
def test_model_field_time_flip_sign_and_sigma_drop():
    net = tiny()
    x, t, y = inputs()
    with torch.no_grad():
        raw = net(x, 1 - t, y)
        v = ModelField(net, "velocity")(x, t, y)
        s = ModelField(net, "score")(x, t, y)
        full = ModelField(net, "velocity").raw(x, t, y)
    assert raw.shape[1] == 8 and v.shape == x.shape
    torch.testing.assert_close(v, -raw[:, :4], rtol=0, atol=0)
    torch.testing.assert_close(s, raw[:, :4], rtol=0, atol=0)
    torch.testing.assert_close(full, raw, rtol=0, atol=0)


def test_model_field_discrete_passes_integer_step():
    net = tiny()
    x, _, y = inputs()
    k = torch.tensor([0, 499, 999])
    f = ModelField(net, "noise", time_input="discrete")
    with torch.no_grad():
        torch.testing.assert_close(f.raw(x, k, y), net(x, k, y), rtol=0, atol=0)
        torch.testing.assert_close(f(x, k, y), net(x, k, y)[:, :4], rtol=0, atol=0)


def test_model_field_bf16_returns_input_dtype_and_validates():
    net = tiny(scale=0.05)
    x, t, y = inputs()
    with torch.no_grad():
        out = ModelField(net, dtype=torch.bfloat16)(x, t, y)
        ref = ModelField(net)(x, t, y)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.03 * ref.abs().max()
    with pytest.raises(ValueError, match="unknown prediction 'eps'"):
        ModelField(net, "eps")
    with pytest.raises(ValueError, match="unknown time_input"):
        ModelField(net, time_input="tau")


# ---------------------------------------------------------------- wired to the math core
def test_tiny_sit_learns_toy_images_and_samples_move_to_data():
    """1-channel 4x4 images, two classes (all +1 / all -1 pixels, plus small noise): a few hundred
    Adam steps of the velocity loss (7) lower the loss; Euler samples land near their class."""
    from sit import objectives, paths
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=4, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2, num_classes=2)
    net = SiT(cfg).train()
    field = ModelField(net, "velocity")
    path = paths.get_path("linear")
    loss_cfg = objectives.LossConfig(prediction="velocity")
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)

    def batch(n):
        y = torch.randint(0, 2, (n,), generator=g)
        x = (1.0 - 2.0 * y.float())[:, None, None, None].expand(n, 1, 4, 4) + 0.05 * torch.randn(n, 1, 4, 4, generator=g)
        return x, y

    losses = []
    for _ in range(300):
        x, y = batch(64)
        loss = objectives.training_losses(field, path, x, loss_cfg, y=y, generator=g)["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:20]), np.mean(losses[-20:])
    assert last < 0.5 * first, (first, last)

    net.eval()
    y = torch.tensor([0] * 16 + [1] * 16)
    x = torch.randn(32, 1, 4, 4, generator=g)
    target = (1.0 - 2.0 * y.float())[:, None, None, None]
    start_err = (x - target).square().mean().item()
    with torch.no_grad():
        try:
            from sit.samplers.ode import sample_euler
            from sit.timegrid import sampling_grid

            out = sample_euler(objectives.velocity_field(field, path, "velocity", y=y), x, sampling_grid(50))
        except ImportError:  # samplers not landed yet: plain Euler on the same grid
            grid = torch.linspace(1.0, 0.0, 51)
            out = x
            for t0, t1 in zip(grid[:-1], grid[1:]):
                out = out + (t1 - t0) * field(out, t0.expand(32), y)
    end_err = (out - target).square().mean().item()
    assert end_err < 0.1 * start_err, (start_err, end_err)
    assert (out.mean(dim=(1, 2, 3)).sign() == target.flatten().sign()).all()


def test_matmul_attention_equals_sdpa():
    net = tiny()
    x, t, y = inputs()
    with torch.no_grad():
        a = net.set_attn_impl("sdpa")(x, t, y)
        b = net.set_attn_impl("matmul")(x, t, y)
        c = net.set_attn_impl("auto")(x, t, y)  # the default: SDPA for fp32 on a CPU
    assert a.abs().max() > 0  # tiny() has non-zero weights, so the comparison means something
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 on a CPU: auto = matmul
        torch.testing.assert_close(net.set_attn_impl("auto")(x, t, y), net.set_attn_impl("matmul")(x, t, y), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown attention impl 'flash'"):
        net.set_attn_impl("flash")


def test_fused_inference_mlp_equals_autograd_path():
    net = tiny()
    x, t, y = inputs()
    a = net(x, t, y)  # autograd on: plain linear + GELU
    with torch.no_grad():
        b = net(x, t, y)  # CPU inference: fused linear+GELU kernel where available
    torch.testing.assert_close(a.detach(), b, rtol=1e-5, atol=1e-5)


def test_sigmoid_form_of_tanh_gelu_is_the_same_function():
    """gelu_tanh_sigmoid (compiled CPU training) = F.gelu(approximate="tanh") to float rounding,
    values and gradients, in float64 and float32, and it keeps bf16 inputs' dtype."""
    from sit.models.sit import gelu_tanh_sigmoid

    h = torch.linspace(-12, 12, 20001, dtype=torch.float64, requires_grad=True)
    ref = F.gelu(h, approximate="tanh")
    ours = gelu_tanh_sigmoid(h)  # float64 out, computed in float32 by design
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    (g_ref,) = torch.autograd.grad(ref.sum(), h)
    (g_ours,) = torch.autograd.grad(ours.sum(), h)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-6, atol=2e-6)
    assert abs(gelu_tanh_sigmoid(torch.tensor(1.0)).item() - 0.8411919906082768) < 1e-6  # 0.5 (1 + tanh(0.797885 * 1.044715))
    hb = torch.randn(64, dtype=torch.bfloat16)
    assert gelu_tanh_sigmoid(hb).dtype == torch.bfloat16
    assert (gelu_tanh_sigmoid(hb).float() - F.gelu(hb.float(), approximate="tanh")).abs().max() <= 2**-7


# ---------------------------------------------------------------- compiled inference
def test_compile_for_inference_matches_eager_and_freezes_weights():
    from sit.models.sit import compile_for_inference

    net = tiny()
    x, t, y = inputs()
    with torch.no_grad():
        ref = net.eval()(x, t, y)
    fast = compile_for_inference(net)
    out = fast(x, t, y)  # runs under no_grad itself, even with autograd on here
    assert not out.requires_grad and not any(p.requires_grad for p in net.parameters())
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert fast.config is net.config and fast.in_channels == net.in_channels  # attributes fall through
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the bf16 sampling path (matmul attention)
        out16 = fast(x, t, y)
    assert out16.dtype == torch.bfloat16
    assert (out16.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_residual_stream_is_contiguous():
    """The token stream entering every block is a contiguous (B, T, D) tensor (with the conv's
    transposed view it was token-strided: a copy in every LayerNorm, strided residual adds)."""
    net = tiny().eval()
    seen = []
    for blk in net.blocks:
        blk.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
    x, t, y = inputs()
    with torch.no_grad():
        net(x, t, y)
    assert seen == [True] * len(net.blocks)
