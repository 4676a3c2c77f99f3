"""Settings and fixtures shared by the unit tests."""

import os
import shutil

import pytest
import torch

from tinyldm.autoencoder import AutoencoderConfig, AutoencoderKL
from tinyldm.runtime import seeded


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run where there is a CUDA GPU and are skipped, saying so, everywhere else."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def one_cpu_thread():
    """The tests use tiny tensors: on a busy 2-core machine extra threads only wait on each other (up to 30x
    slower), and one thread also keeps reductions in the same order on every run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_autoencoder(tmp_path_factory):
    """The folder of a fresh tiny autoencoder (training one is lesson 4's job, not these tests')."""
    folder = tmp_path_factory.mktemp("autoencoder")
    with seeded(0):
        AutoencoderKL(AutoencoderConfig.tiny()).save_pretrained(folder)
    return folder


@pytest.fixture
def write_idx():
    """Writes extracted idx files as torchvision reads them from <root>/<Dataset>/raw (images uint8 (N, H, W))."""

    def write(folder, prefix, images, labels):
        folder.mkdir(parents=True, exist_ok=True)
        n, h, w = images.shape
        header = (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + h.to_bytes(4, "big") + w.to_bytes(4, "big")
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.numpy().tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
            (2049).to_bytes(4, "big") + n.to_bytes(4, "big") + labels.numpy().tobytes())

    return write


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium driven by Playwright, for the tests marked ``browser``.

    The browser is Debian's ``chromium`` package (``apt-get install chromium``; ``.ci/run`` installs it), passed to
    Playwright as its executable: Playwright cannot download a browser of its own offline. Set ``CHROMIUM`` to use
    another binary. Where Playwright or Chromium is missing the test is skipped, saying which.
    """
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make setup)")
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Chromium is not installed: apt-get install chromium (.ci/run installs it), or set CHROMIUM")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def build_tiny_ldm(conditional: bool = True, num_steps: int = 50):
    """A fresh tiny text-to-image LatentDiffusion on 32x32 images (8x8x4 latents), seeded, untrained; its zero-
    initialised output layers are filled so that the UNet's prediction depends on its input and the prompt."""
    import dataclasses

    from tinyldm.ldm import LatentDiffusion
    from tinyldm.schedule import NoiseSchedule
    from tinyldm.text import TextEncoderConfig, TinyTextEncoder
    from tinyldm.unet import UNet, UNetConfig

    with seeded(0):
        autoencoder = AutoencoderKL(AutoencoderConfig.tiny())
    config = dataclasses.replace(UNetConfig.tiny(32 if conditional else None), in_channels=4, out_channels=4,
                                 base_channels=8, num_heads=2)
    with seeded(1):
        unet = UNet(config)
        for p in unet.parameters():
            if p.ndim > 1 and not p.any():
                torch.nn.init.normal_(p, std=0.05)
    text = None
    if conditional:
        with seeded(2):
            text = TinyTextEncoder(TextEncoderConfig.tiny())
    return LatentDiffusion(autoencoder, unet, NoiseSchedule.scaled_linear(num_steps), text, 32).eval()


@pytest.fixture(scope="session")
def tiny_ldm():
    """A tiny untrained text-to-image LatentDiffusion (``build_tiny_ldm``), shared by the editing tests."""
    return build_tiny_ldm()


@pytest.fixture(scope="session")
def tiny_ldm_folder(tmp_path_factory, tiny_ldm):
    """The folder of the tiny pipeline (``tiny_ldm``), for the commands' ``--checkpoint``."""
    return tiny_ldm.save_pretrained(tmp_path_factory.mktemp("tiny-ldm"))
