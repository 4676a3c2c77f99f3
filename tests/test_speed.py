"""The GPU speed switches change how a training step runs, never what it computes."""

import pytest
import torch

from tinyldm.runtime import seeded
from tinyldm.schedule import NoiseSchedule
from tinyldm.training.diffusion_loop import TrainConfig, train_diffusion
from tinyldm.training.speed import SpeedConfig
from tinyldm.unet import UNet, UNetConfig

CONFIG = TrainConfig(steps=2, batch_size=4, lr=1e-3, warmup_steps=1, checkpoint_every=0, sample_every=0)


def _model() -> UNet:
    with seeded(0):
        return UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), attention_levels=(), groups=4))


def _data() -> torch.Tensor:
    return torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_speed_switches_leave_a_cpu_run_unchanged():
    plain = train_diffusion(_model(), _data(), NoiseSchedule.linear(50), CONFIG, progress=False)
    switched = train_diffusion(_model(), _data(), NoiseSchedule.linear(50), CONFIG, progress=False,
                               speed=SpeedConfig(tf32=True, channels_last=True, fused_adamw=True))
    assert plain.losses == switched.losses


def test_a_negative_device_budget_is_refused():
    with pytest.raises(ValueError, match="SpeedConfig.data_on_device_mb must be >= 0"):
        SpeedConfig(data_on_device_mb=-1).validate()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: bf16 autocast and data kept on the GPU")
def test_speed_switches_on_cuda_train_and_keep_data_on_the_gpu():
    device = torch.device("cuda")
    data = _data()
    assert SpeedConfig().place_data(data, device).device.type == "cuda"
    assert SpeedConfig(data_on_device_mb=0).place_data(data, device).is_pinned()
    speed = SpeedConfig(tf32=True, channels_last=True, fused_adamw=True)
    result = train_diffusion(_model().to(device), data, NoiseSchedule.linear(50).to(device), CONFIG,
                             progress=False, speed=speed)
    assert all(torch.isfinite(torch.tensor(result.losses)))
