"""The GPU speed switches: each one changes what it says it changes, only on the device it is meant for, and a
switched CUDA run computes what the plain one does."""

import pytest
import torch

from tinyldm.runtime import seeded
from tinyldm.schedule import NoiseSchedule
from tinyldm.training.diffusion_loop import TrainConfig, train_diffusion
from tinyldm.training.speed import SpeedConfig
from tinyldm.unet import UNet, UNetConfig

CONFIG = TrainConfig(steps=2, batch_size=4, lr=1e-3, warmup_steps=1, checkpoint_every=0, sample_every=0)
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def _model() -> UNet:
    with seeded(0):
        return UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), attention_levels=(), groups=4))


def _data() -> torch.Tensor:
    return torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _channels_last(model: torch.nn.Module) -> bool:
    return all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.ndim == 4)


def test_fused_adamw_is_asked_for_on_cuda_only_and_a_cpu_gets_the_multi_tensor_update():
    assert SpeedConfig(fused_adamw=True).adamw_options(CUDA) == {"fused": True}
    assert SpeedConfig(fused_adamw=True).adamw_options(CPU) == {"foreach": True}
    assert SpeedConfig().adamw_options(CUDA) == {}
    assert SpeedConfig().adamw_options(CPU) == {"foreach": True}


def test_the_multi_tensor_adamw_on_a_cpu_trains_the_same_weights_bit_for_bit():
    # The lessons compare their own loops, with a plain AdamW, against the package's: the faster update must not
    # change a single bit of the weights.
    runs = []
    for options in ({}, SpeedConfig().adamw_options(CPU)):
        model = _model()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, **options)
        generator = torch.Generator().manual_seed(0)
        for _ in range(5):
            x, t = _data(), torch.randint(0, 10, (16,), generator=generator)
            loss = model(x, t).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        runs.append([p.detach() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_channels_last_changes_the_weights_memory_format_for_cuda_only():
    model = _model()  # the layout is a property of the tensors, so a CPU model shows what CUDA would get
    SpeedConfig(channels_last=True).prepare_model(model, CPU)
    assert not _channels_last(model)
    SpeedConfig(channels_last=True).prepare_model(model, CUDA)
    assert _channels_last(model)
    before = model(torch.zeros(1, 3, 8, 8), torch.zeros(1, dtype=torch.long))
    assert before.shape == (1, 3, 8, 8)  # and the model still runs


def test_compile_compiles_the_model_in_place():
    model = _model()
    SpeedConfig().prepare_model(model, CPU)
    assert model._compiled_call_impl is None
    SpeedConfig(compile=True).prepare_model(model, CPU)
    assert model._compiled_call_impl is not None  # nn.Module.compile: the next call compiles


def test_tf32_sets_the_process_precision_for_cuda_only():
    before = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    try:
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        SpeedConfig(tf32=True).apply_precision(CPU)
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        SpeedConfig(tf32=False).apply_precision(CUDA)
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        SpeedConfig(tf32=True).apply_precision(CUDA)
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = before


def test_tf32_uses_the_older_switches_on_a_pytorch_without_fp32_precision(monkeypatch):
    class OlderSwitches:
        """Like PyTorch before 2.9: allow_tf32 only, and an unknown attribute is refused, as cuBLASModule does."""

        def __init__(self):
            object.__setattr__(self, "allow_tf32", False)

        def __setattr__(self, name, value):
            if name != "allow_tf32":
                raise AttributeError(f"Unknown attribute {name}")
            object.__setattr__(self, name, value)

    matmul, cudnn = OlderSwitches(), OlderSwitches()
    monkeypatch.setattr(torch.backends.cuda, "matmul", matmul)
    monkeypatch.setattr(torch.backends, "cudnn", cudnn)
    SpeedConfig(tf32=True).apply_precision(CUDA)
    assert matmul.allow_tf32 and cudnn.allow_tf32


def test_on_the_cpu_autocast_is_off_and_the_data_stays_where_it_is():
    assert not SpeedConfig(bf16=True).autocast(CPU)._enabled
    data = _data()
    assert SpeedConfig().place_data(data, CPU) is data


def test_a_negative_device_budget_is_refused():
    with pytest.raises(ValueError, match="SpeedConfig.data_on_device_mb must be >= 0"):
        SpeedConfig(data_on_device_mb=-1).validate()


@pytest.mark.cuda
def test_speed_switches_on_cuda_compute_what_the_plain_run_does():
    data = _data()
    assert SpeedConfig().place_data(data, CUDA).device.type == "cuda"
    assert SpeedConfig(data_on_device_mb=0).place_data(data, CUDA).is_pinned()
    autocast = SpeedConfig().autocast(CUDA)
    assert autocast._enabled and autocast.fast_dtype == torch.bfloat16

    def run(speed):
        return train_diffusion(_model().to(CUDA), data, NoiseSchedule.linear(50).to(CUDA), CONFIG, progress=False,
                               speed=speed).losses

    plain = run(SpeedConfig(bf16=False))
    switched = run(SpeedConfig(bf16=True, tf32=True, channels_last=True, fused_adamw=True))
    # bf16 keeps 8 bits of mantissa: the same losses to about 1%, not bit for bit
    torch.testing.assert_close(torch.tensor(switched), torch.tensor(plain), rtol=2e-2, atol=1e-3)
