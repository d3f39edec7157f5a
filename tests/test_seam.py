"""The objective seam (sit.train.seam): no import circle under sit/train (every import counted,
also those inside functions), every module imports on its own, and terms read the objective's
outputs (no hooks on the network)."""

import ast
import importlib
from pathlib import Path

import torch

import sit.train

TRAIN = Path(sit.train.__file__).parent


def _edges() -> dict[str, set[str]]:
    mods = {p.stem for p in TRAIN.glob("*.py") if p.stem != "__init__"}
    edges = {}
    for m in mods:
        deps = set()
        for node in ast.walk(ast.parse((TRAIN / f"{m}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("sit.train."):
                    deps.add(node.module.split(".")[2])
                elif node.module == "sit.train":
                    deps |= {a.name for a in node.names if a.name in mods} or {"__init__"}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[2] for a in node.names if a.name.startswith("sit.train.")}
        edges[m] = deps - {m}
    return edges


def test_no_import_circle_under_sit_train():
    edges = _edges()
    assert "__init__" not in set().union(*edges.values())  # no module imports the package front
    state: dict[str, int] = {}

    def visit(m, stack):
        if state.get(m) == 1:
            raise AssertionError(f"import circle: {' -> '.join(stack[stack.index(m):] + [m])}")
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in sorted(edges.get(m, ())):
            visit(d, stack + [m])
        state[m] = 2

    for m in sorted(edges):
        visit(m, [])
    assert edges["seam"] == set()  # the base classes import nothing of sit.train
    assert all("objective" not in edges[m] for m in ("seam", "paper", "meanflow", "terms", "repa"))  # nor terms the table
    for m in sorted(edges):
        importlib.import_module(f"sit.train.{m}")


def test_terms_read_the_objectives_outputs_and_hook_nothing():
    from sit.config import ModelConfig, TrainConfig
    from sit.models.sit import SiT
    from sit.train.builders import build_objective
    from sit.train.repa import RepaTerm
    from sit.train.terms import CosineVelocityTerm

    mc = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2, num_classes=10,
                     learn_sigma=False)
    torch.manual_seed(0)
    net = SiT(mc)
    for q in net.final_layer.parameters():
        torch.nn.init.normal_(q, std=0.1)
    cfg = TrainConfig(cosine_coeff=1.0)
    obj = build_objective(cfg, mc)
    obj.hidden_blocks = (2,)
    x, eps, t, y = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8), torch.tensor([0.2, 0.5, 0.9]), torch.tensor([1, 2, 3])
    out = obj.outputs(net, x, t, eps, y)
    assert out.hidden[2].shape == (3, 16, 32)
    assert not any(m._forward_hooks for m in net.modules())
    # the term compares what the objective compared: an exact prediction gives 0 (the tau flip is applied once)
    out.pred = out.target.clone()
    assert float(CosineVelocityTerm(cfg, mc)(out).abs().max()) < 1e-6
    out.pred = -out.target
    assert torch.allclose(CosineVelocityTerm(cfg, mc)(out), torch.full((3,), 2.0))

    class Enc:
        dim = 5

        def __call__(self, pixels):
            return pixels.flatten(2).transpose(1, 2)[:, :16].expand(-1, -1, 5)

    term = RepaTerm(Enc(), 32, 2, 0.5, 8, 4)
    assert term.hidden_blocks == (2,) and "encoder" not in dict(term.named_modules())
    out.pixels = torch.rand(3, 1, 4, 4)
    assert term(out).shape == (3,)
