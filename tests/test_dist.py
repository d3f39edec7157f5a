"""sit.dist single-process fallbacks, and 2-process gloo DDP training (torchrun) equal to one process."""

import json

import pytest
import torch
from tiny_cli import train_two_processes

from sit import dist


def test_single_process_fallbacks(capsys):
    assert not dist.is_initialized()
    assert dist.rank() == 0 and dist.world_size() == 1 and dist.local_rank() == 0 and dist.is_main()
    x = torch.tensor([1.0, 3.0])
    assert torch.equal(dist.all_reduce_mean(x.clone()), x) and torch.equal(dist.all_gather_cat(x), x)
    dist.barrier()
    dist.print0("hello")
    assert capsys.readouterr().out == "hello\n"
    assert dist.init("cpu") == torch.device("cpu")  # no torchrun variables: nothing initialised
    assert not dist.is_initialized()
    dist.cleanup()


FLAGS = ["--steps", "4", "--depth", "2", "--hidden-size", "32", "--num-heads", "2", "--patch-size", "2",
         "--batch", "16", "--lr", "3e-3", "--warmup", "0", "--log-every", "1", "--ckpt-every", "4", "--ema", "0.9",
         "--no-quality", "--samples-per-class", "2", "--sample-steps", "2", "--no-progress", "--threads", "1",
         "--label-dropout", "0.25"]


def test_two_process_gloo_ddp_equals_single_process(tmp_path):
    from safetensors.torch import load_file

    from sit.cli import main

    ddp = tmp_path / "ddp"
    p = train_two_processes(ddp, ["--device", "cpu", *FLAGS], timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    check = json.loads((ddp / "ddp_check.json").read_text())
    assert check == {"world_size": 2, "ranks_identical": True}

    one = tmp_path / "one"
    assert main(["train", "--out", str(one), "--device", "cpu", *FLAGS]) == 0
    for name in ("model", "ema"):
        a = load_file(str(ddp / "checkpoints" / "step-0000004" / f"{name}.safetensors"))
        b = load_file(str(one / "checkpoints" / "step-0000004" / f"{name}.safetensors"))
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    la = [json.loads(l)["loss"] for l in (ddp / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(l)["loss"] for l in (one / "metrics.jsonl").read_text().splitlines()]
    assert la == pytest.approx(lb, rel=1e-5)
    state = json.loads((ddp / "checkpoints" / "step-0000004" / "state.json").read_text())
    assert state["world_size"] == 2

    # a run resumes on another number of processes: the 2-process run continued by one process
    # matches the 1-process run continued the same way (the step's data, t, eps and label drops are
    # drawn for the global batch, then split by rank)
    assert main(["train", "--resume", str(ddp), "--steps", "6", "--no-progress"]) == 0
    assert main(["train", "--resume", str(one), "--steps", "6", "--no-progress"]) == 0

    def tail(run):
        recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in recs if "loss" in r and r["step"] > 4}

    assert sorted(tail(ddp)) == [5, 6]
    assert list(tail(ddp).values()) == pytest.approx(list(tail(one).values()), rel=1e-5)


def test_tf32_context_sets_and_restores_both_flags():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    for on in (True, False):
        with dist.tf32(on):
            assert torch.backends.cuda.matmul.allow_tf32 is on and torch.backends.cudnn.allow_tf32 is on
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with pytest.raises(RuntimeError, match="boom"):
        with dist.tf32(not before[0]):
            raise RuntimeError("boom")
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_cuda_device_without_cuda_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ValueError, match="device cuda: this torch has no CUDA; use device cpu"):  # the argument; the CLI says --device
        dist.init("cuda")
    assert dist.resolve_device("cpu").type == "cpu" and dist.resolve_device(None).type == "cpu"
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        dist.resolve_device("gpu0")
    from sit.cli import main

    assert main(["train", "--device", "cuda", "--steps", "1", "--out", "/nonexistent/never"]) == 2
    err = capsys.readouterr().err
    assert "this torch has no CUDA; use --device cpu" in err and len(err.strip().splitlines()) == 1
