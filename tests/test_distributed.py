"""Data-parallel training: two gloo processes on the CPU take the steps one process takes with the same global
batch, resume from a checkpoint, and the torchrun command line works end to end."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tinyldm.autoencoder import AutoencoderConfig, AutoencoderKL
from tinyldm.autoencoder_loss import AutoencoderLoss, AutoencoderLossConfig
from tinyldm.data.shapes import shapes_tensor
from tinyldm.ldm import LatentDiffusion
from tinyldm.runtime import seeded
from tinyldm.schedule import NoiseSchedule
from tinyldm.text import TextEncoderConfig, TinyTextEncoder
from tinyldm.training import distributed
from tinyldm.training.autoencoder_loop import AutoencoderTrainConfig, train_autoencoder
from tinyldm.training.diffusion_loop import TrainConfig, train_diffusion
from tinyldm.unet import UNet, UNetConfig

CAPTIONS = ["a large red circle at the top left", "a small blue square in the center",
            "a large green diamond on the right"]
STEPS, HALF = 6, 3
# Two processes sum their gradients in another order than one process does: float32 rounding, nothing more.
TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}
SCHEDULE = NoiseSchedule.linear(50)


def _pipeline() -> LatentDiffusion:
    """A text-conditioned latent diffusion pipeline, as ``train_ldm`` builds it (tiny)."""
    with seeded(0):
        autoencoder = AutoencoderKL(AutoencoderConfig(base_channels=8, channel_mults=(1, 2, 2), groups=4))
        text = TinyTextEncoder(TextEncoderConfig.tiny())
        unet = UNet(UNetConfig(in_channels=4, out_channels=4, base_channels=8, channel_mults=(1, 2),
                               attention_levels=(1,), groups=4, context_dim=text.context_dim))
    return LatentDiffusion(autoencoder, unet, SCHEDULE, text, image_size=32)


def _data() -> tuple[torch.Tensor, list[str]]:
    gen = torch.Generator().manual_seed(0)
    index = torch.randint(0, len(CAPTIONS), (32,), generator=gen)
    return torch.randn(32, 4, 8, 8, generator=gen), [CAPTIONS[i] for i in index.tolist()]


def _config(**changes) -> TrainConfig:
    base = dict(steps=STEPS, batch_size=8, lr=1e-3, warmup_steps=2, checkpoint_every=HALF, sample_every=0)
    return TrainConfig(**{**base, **changes})


def _train(out: Path | None, until: int | None = None, resume: bool = False):
    model = _pipeline()
    latents, captions = _data()
    result = train_diffusion(model, latents, SCHEDULE, _config(), out=out, resume=resume, progress=False,
                             until=until, captions=captions, p_uncond=0.3)
    return model, result


def _worker(rank: int, world: int, rendezvous: str, out: str, results: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    try:
        _train(Path(out), until=HALF)  # "interrupted" at a checkpoint ...
        model, result = _train(Path(out), resume=True)  # ... and resumed, by every process from process 0's file
        if rank == 0:
            torch.save({"losses": result.losses, "model": model.state_dict(),
                        "ema": result.ema_model.state_dict()}, results)
        else:  # the processes must hold the same weights: the averaged gradients keep them in step
            reference = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
            torch.save(reference, results + ".rank1")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    single_model, single = _train(None)
    results = str(tmp_path / "results.pt")
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path / "run"), results), nprocs=2,
             join=True)
    parallel = torch.load(results, weights_only=False)
    assert len(parallel["losses"]) == STEPS
    torch.testing.assert_close(torch.tensor(parallel["losses"]), torch.tensor(single.losses), **TOLERANCE)
    for name, value in single_model.state_dict().items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            torch.testing.assert_close(parallel["model"][name], value, **TOLERANCE, msg=name)
    for name, value in single.ema_model.state_dict().items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            torch.testing.assert_close(parallel["ema"][name], value, **TOLERANCE, msg=name)
    other = torch.load(results + ".rank1", weights_only=False)
    for name, value in other.items():
        if value.is_floating_point():
            assert torch.equal(value, parallel["model"][name]), name
    # Only process 0 wrote the run folder: one log line per step, no duplicates.
    assert len((tmp_path / "run" / "loss.jsonl").read_text().splitlines()) == STEPS


def _train_autoencoder(out: Path | None, until: int | None = None, resume: bool = False):
    with seeded(0):
        model = AutoencoderKL(AutoencoderConfig(base_channels=8, channel_mults=(1, 2, 2), groups=4))
    # LPIPS off (it needs weights on disk); the GAN and its adaptive weight on from step 2.
    loss = AutoencoderLoss(AutoencoderLossConfig(perceptual_weight=0.0, disc_start=2, disc_channels=8, disc_layers=2,
                                                 disc_groups=4), generator=torch.Generator().manual_seed(0))
    config = AutoencoderTrainConfig(steps=STEPS, batch_size=8, lr=1e-3, disc_lr=1e-3, warmup_steps=2, ema_decay=0.9,
                                    checkpoint_every=HALF, sample_every=0)
    result = train_autoencoder(model, loss, shapes_tensor(32, size=16), config, out=out, resume=resume,
                               progress=False, until=until)
    return model, loss, result


def _autoencoder_worker(rank: int, world: int, rendezvous: str, out: str, results: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    try:
        _train_autoencoder(Path(out), until=HALF)
        model, loss, result = _train_autoencoder(Path(out), resume=True)
        if rank == 0:
            torch.save({"records": result.records, "model": model.state_dict(),
                        "discriminator": loss.discriminator.state_dict()}, results)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_the_autoencoder_trains_on_two_processes_as_on_one(tmp_path):
    model, loss, single = _train_autoencoder(None)
    results = str(tmp_path / "results.pt")
    mp.spawn(_autoencoder_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path / "run"), results),
             nprocs=2, join=True)
    parallel = torch.load(results, weights_only=False)
    assert [r["step"] for r in parallel["records"]] == list(range(1, STEPS + 1))
    for key in ("loss", "l1", "kl", "g_loss", "adaptive_weight", "d_loss", "grad_norm", "disc_grad_norm"):
        got = [r.get(key, 0.0) for r in parallel["records"]]
        expected = [r.get(key, 0.0) for r in single.records]
        assert any(v != 0 for v in expected), key  # the GAN term and its adaptive weight did take part
        torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), **TOLERANCE, msg=key)
    for name, value in [*model.state_dict().items(), *loss.discriminator.state_dict().items()]:
        if value.is_floating_point():
            merged = {**parallel["model"], **parallel["discriminator"]}
            torch.testing.assert_close(merged[name], value, **TOLERANCE, msg=name)


def test_a_global_batch_that_does_not_split_evenly_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ValueError, match="global batch of 8 images does not split evenly over 3 processes; use a "
                                         r"batch size that is a multiple of 3 \(e.g. 9 or 6\)"):
        distributed.check_global_batch(8)


def test_shard_gives_each_process_its_contiguous_share(monkeypatch):
    batch = torch.arange(12)
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    shares = []
    for r in range(3):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        shares.append(distributed.shard(batch))
    assert [s.tolist() for s in shares] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_a_single_process_ignores_the_distributed_helpers():
    value = torch.tensor([1.5, 2.0])
    assert distributed.local_rank() is None or "WORLD_SIZE" in os.environ
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main_process()
    assert distributed.mean_over_processes(value) is value and distributed.shard(value) is value


@pytest.mark.slow
def test_torchrun_without_its_variables_is_explained(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="WORLD_SIZE=2 but RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set: "
                                         "start several processes with torchrun"):
        distributed.local_rank()


@pytest.mark.slow
def test_torchrun_trains_the_pixel_model_on_two_processes(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "tinyldm", "train", "pixel", "--config", "tiny", "--steps", "2", "--batch-size", "8",
               "--num-images", "64", "--device", "cpu", "--threads", "1", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("data-parallel training: 2 processes") == 1  # only process 0 speaks
    assert (out / "model.safetensors").is_file() and (out / "train_state.pt").is_file()
    assert len((out / "loss.jsonl").read_text().splitlines()) == 2
