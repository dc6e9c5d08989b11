"""fit() under 2 gloo processes on CPU trains the same masker as one process with the same batch.

Each rank is a plain ``python tests/test_distributed.py worker ...`` subprocess joined through a
``file://`` store (no port to collide with, no launcher needed), so its stdout/stderr and
checkpoint folder can be inspected separately.

Two things make a data-parallel run differ from one process by design, and the test removes
them on both sides alike:

* Random draws: each rank seeds its own generator (``seed + rank``), so fake selectors and
  alternative images differ from the single-process draws. ``fake_prob=0`` and
  ``blur_prob=1`` make every draw irrelevant (all selectors real; the alternative image is the
  deterministic blur).
* BatchNorm in training mode normalises with per-rank batch statistics (that is DDP's
  semantics; ``SyncBatchNorm`` would share them but refuses CPU tensors in torch 2.x). The
  decoder's BatchNorm layers are replaced by identities in both runs, so every remaining
  operation is per-example and the averaged gradients of the two half batches equal the
  gradient of the whole batch.

What stays real: DistributedDataParallel around the masker, the DistributedSampler that
fit() adds to a plain DataLoader, gradient averaging, Adam, the area warm-up schedule computed
from the sharded loader's length, rank-0-only progress and checkpoints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_realtime_mask.training.distributed import shard_loader

WORLD = 2
PER_RANK_BATCH = 4
EPOCHS = 2
N_IMAGES = 32
HERE = Path(__file__).resolve()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    x = torch.rand(N_IMAGES, 3, 32, 32, generator=g)
    y = torch.randint(0, 3, (N_IMAGES,), generator=g)
    for i in range(N_IMAGES):  # a class-coloured square, so the loss terms are not trivial
        x[i, y[i], 8:20, 10:22] = 1.0
    return x, y


def _attribution():
    import timm

    from captum_realtime_mask import ObjectiveConfig, RealTimeMaskAttribution

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()
    objective = ObjectiveConfig(fake_prob=0.0, blur_prob=1.0)
    attr = RealTimeMaskAttribution(model, objective=objective, seed=0)
    _drop_batchnorm(attr.masker)
    return attr


def _drop_batchnorm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            _drop_batchnorm(child)


def _train(
    batch_size: int, checkpoint_dir: str | None, progress: bool, channels_last: bool = False
) -> dict[str, torch.Tensor]:
    from torch.utils.data import DataLoader, TensorDataset

    attr = _attribution()
    loader = DataLoader(TensorDataset(*_data()), batch_size=batch_size, shuffle=False)
    attr.fit(
        loader,
        epochs=EPOCHS,
        lr=3e-3,
        device="cpu",
        seed=0,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=3,
        channels_last=channels_last,
    )
    return {k: v.detach().clone() for k, v in attr.masker.state_dict().items()}


def _worker(rank: int, world: int, init_file: str, out_dir: str, channels_last: bool) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ckpt = os.path.join(out_dir, f"ckpt-rank{rank}")
        state = _train(PER_RANK_BATCH, ckpt, progress=True, channels_last=channels_last)
        torch.save(state, os.path.join(out_dir, f"masker-rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], **tol) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=lambda m, k=k: f"{k}: {m}", **tol)


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].numel())


@pytest.mark.slow
@pytest.mark.parametrize("channels_last", [False, True])
def test_two_gloo_ranks_equal_one_process_with_the_global_batch(tmp_path, channels_last):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    init_file = tmp_path / "store"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE),
                "worker",
                str(r),
                str(WORLD),
                str(init_file),
                str(tmp_path),
                str(int(channels_last)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for r in range(WORLD)
    ]
    logs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=150)
            logs.append(err)
            assert p.returncode == 0, f"rank {len(logs) - 1} failed:\n{out}\n{err[-4000:]}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()

    torch.set_num_threads(1)
    ranks = [torch.load(tmp_path / f"masker-rank{r}.pt", weights_only=True) for r in range(WORLD)]
    single = _train(PER_RANK_BATCH * WORLD, None, progress=False, channels_last=channels_last)
    initial = {k: v.detach().clone() for k, v in _attribution().masker.state_dict().items()}

    # Gradients were in sync: both ranks hold the same masker.
    _assert_close(ranks[0], ranks[1], rtol=0, atol=0)
    # ... which is the single-process masker trained on the global batch.
    _assert_close(ranks[0], single, rtol=1e-4, atol=1e-5)
    # Not trivially: training moved the weights far beyond that tolerance, and training on
    # the per-rank batch alone (no gradient averaging, twice the steps) ends elsewhere.
    assert _max_diff(single, initial) > 1e-2
    per_rank_alone = _train(PER_RANK_BATCH, None, progress=False, channels_last=channels_last)
    assert _max_diff(per_rank_alone, single) > 1e-3

    # Rank 0 alone shows progress and writes checkpoints.
    assert "fit masker" in logs[0]
    assert "fit masker" not in logs[1]
    steps = sorted(p.name for p in (tmp_path / "ckpt-rank0").glob("step-*"))
    assert steps, "rank 0 wrote no checkpoint"
    rank1_dir = tmp_path / "ckpt-rank1"
    assert not rank1_dir.exists() or not any(rank1_dir.iterdir())


if __name__ == "__main__" and len(sys.argv) == 7 and sys.argv[1] == "worker":
    _worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6] == "1")


def _seed_workers(worker_id):  # a worker_init_fn the sharded loader must keep
    torch.manual_seed(worker_id)


@pytest.fixture
def one_process_group(tmp_path):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    yield
    torch.distributed.destroy_process_group()


def test_the_sharded_loader_keeps_every_option_of_the_users(one_process_group):
    data = TensorDataset(torch.rand(6, 3, 8, 8), torch.arange(6))
    generator = torch.Generator().manual_seed(5)
    loader = DataLoader(
        data,
        batch_size=2,
        shuffle=True,
        num_workers=2,
        worker_init_fn=_seed_workers,
        generator=generator,
        prefetch_factor=3,
        timeout=7.0,
        multiprocessing_context="spawn",
        pin_memory_device="cpu",
        persistent_workers=True,
        drop_last=True,
    )
    sharded = shard_loader(loader, seed=0)
    assert isinstance(sharded.sampler, torch.utils.data.DistributedSampler)
    assert sharded.sampler.shuffle
    for name in (
        "batch_size",
        "num_workers",
        "worker_init_fn",
        "generator",
        "prefetch_factor",
        "timeout",
        "multiprocessing_context",
        "pin_memory_device",
        "persistent_workers",
        "drop_last",
        "collate_fn",
    ):
        assert getattr(sharded, name) == getattr(loader, name), name
    assert sharded.generator is generator
