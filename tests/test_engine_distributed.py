"""A real 2-process gloo run of the Trainer on the CPU: the replicas must stay identical."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from test_engine_trainer import TinyBoxes, tiny_config  # noqa: I001  (the sibling test module: shared tiny data)

from yolox_fast.engine.train_state import read_train_state
from yolox_fast.engine.distributed import DistContext, all_reduce_mean, broadcast_object, setup_distributed
from yolox_fast.engine.ema import unwrap
from yolox_fast.engine.trainer import Trainer, seed_everything
from yolox_fast.models import build_yolox

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    # What torchrun sets for each process.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)  # two processes on a 2-core machine
    ctx = setup_distributed("cpu")
    assert ctx == DistContext(rank, WORLD, rank, torch.device("cpu"))
    evaluated = []

    def evaluate(model):
        evaluated.append(rank)
        return {"AP": 0.25, "AP50": 0.5, "AP75": 0.125}

    cfg = tiny_config(out_dir, epochs=2, batch_size=2 * WORLD, random_size=(2, 3), eval_interval=2, seed=5)
    # as train.py does: only rank 0 has an evaluator
    trainer = Trainer(cfg, TinyBoxes(n=8), ["red", "blue"], evaluate=evaluate if rank == 0 else None, ctx=ctx)
    sizes = []
    unwrap(trainer.model).register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[-1]))
    result = trainer.fit()
    trainer.close()
    means = all_reduce_mean({"x": float(rank)}, ctx.device)
    torch.save({
        "model": unwrap(trainer.model).state_dict(), "ema": trainer.ema.ema.state_dict(), "sizes": sizes,
        "evaluated": evaluated, "best_ap": result["best_ap"], "mean": means["x"], "broadcast": broadcast_object(rank),
        "lr": trainer.optimizer.param_groups[0]["lr"],
    }, os.path.join(out_dir, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_keep_identical_replicas(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    for key in ("model", "ema"):
        assert r0[key].keys() == r1[key].keys()
        for name in r0[key]:  # parameters, and BatchNorm statistics (averaged after each epoch)
            assert torch.equal(r0[key][name], r1[key][name]), f"{key}.{name} differs between the ranks"
    seed_everything(5)  # the workers' seed: the initial weights every rank started from
    initial = build_yolox("yolox-nano", num_classes=2).state_dict()
    assert not torch.equal(initial["head.cls_preds.0.weight"], r0["model"]["head.cls_preds.0.weight"])  # trained
    # every rank trained on the same input sizes, drawn on rank 0 and broadcast
    assert r0["sizes"] == r1["sizes"] and len(r0["sizes"]) == 4 and set(r0["sizes"]) <= {64, 96}
    assert r0["evaluated"] == [0] and r1["evaluated"] == []  # only rank 0 evaluates ...
    assert r0["best_ap"] == r1["best_ap"] == 0.25  # ... and every rank learns the result
    assert r0["mean"] == r1["mean"] == 0.5 and r0["broadcast"] == r1["broadcast"] == 0
    ckpt = read_train_state(tmp_path / "latest.pt")  # written once, by rank 0, with both ranks' RNG states
    assert len(ckpt["rng"]) == WORLD and not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    assert ckpt["epoch"] == 2 and ckpt["iteration"] == 4
    for name, value in ckpt["model"].items():
        assert torch.equal(value, r0["model"][name])
