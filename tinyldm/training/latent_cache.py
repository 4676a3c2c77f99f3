"""Encode a dataset into latents once, and keep them on disk so re-runs skip the autoencoder.

The autoencoder is frozen while latent diffusion trains, so every epoch would encode the same images to the same
latents: ``encode_dataset`` does it once. It takes the posterior's mean (its mode), not a sample: with the tiny KL
weight of lesson 4 the posterior's std is small next to the latents' spread, and one fixed sample per image would
only freeze an arbitrary bit of noise into every epoch. The latents are scaled by the autoencoder's
``scale_factor`` (Rombach et al. 2022, Sec. 4.3.2), as the UNet sees them.

``cached_latents`` stores them under a file name made from a hash of the autoencoder's weights (scale factor
included) and a description of the images, so another autoencoder or other images never read a stale cache. A
cache file that cannot be read (cut short by a full disk or a copy) is deleted with a warning and encoded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor, nn
from tqdm.auto import tqdm

from tinyldm.autoencoder import AutoencoderKL
from tinyldm.data.vision import default_root
from tinyldm.runtime import atomic_write

__all__ = ["encode_dataset", "weights_hash", "latent_cache_dir", "cached_latents"]


@torch.no_grad()
def encode_dataset(autoencoder: AutoencoderKL, images: Tensor, batch_size: int = 256,
                   progress: bool = False) -> Tensor:
    """Scaled posterior means of ``images``: scale_factor * mean of q(z|x), in batches.

    Args:
        autoencoder: the frozen autoencoder (the batches move to its device).
        images: (N, 3, H, W) in [-1, 1].
        batch_size: images per encoder call.
        progress: show a progress bar.
    Returns:
        (N, C, H/f, W/f) float32 latents on the CPU.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    device = next(autoencoder.parameters()).device
    autoencoder.eval()
    starts = range(0, images.shape[0], batch_size)
    parts = [autoencoder.latents(images[i:i + batch_size].to(device)).float().cpu()
             for i in tqdm(starts, desc="encoding latents", disable=not progress)]
    return torch.cat(parts)


def weights_hash(module: nn.Module) -> str:
    """SHA-256 of a module's state (names, shapes, dtypes and values of every tensor, buffers included)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def latent_cache_dir() -> Path:
    """The default cache folder: ``$TINYLDM_CACHE/latents``, or ``~/.cache/tinyldm/latents``."""
    return default_root().parent / "latents"


def cached_latents(autoencoder: AutoencoderKL, images: Tensor, cache_dir: str | os.PathLike | None,
                   key: dict[str, Any], batch_size: int = 256, progress: bool = False) -> Tensor:
    """``encode_dataset(autoencoder, images)``, read from ``cache_dir`` when an earlier run stored it.

    Args:
        autoencoder: the frozen autoencoder.
        images: (N, 3, H, W) in [-1, 1].
        cache_dir: the cache folder (created if needed); None encodes without caching.
        key: a JSON-ready description that identifies ``images``, e.g. {"dataset": "shapes", "num_images": N,
            "size": 32, "seed": 0, "split": "train"}; the same key must always mean the same images.
        batch_size, progress: see ``encode_dataset``.
    Returns:
        (N, C, H/f, W/f) float32 latents on the CPU.
    """
    if cache_dir is None:
        return encode_dataset(autoencoder, images, batch_size, progress)
    description = json.dumps({"autoencoder": weights_hash(autoencoder), "images": key, "z": "scaled mode"},
                             sort_keys=True)
    path = Path(cache_dir) / f"latents-{hashlib.sha256(description.encode()).hexdigest()[:20]}.safetensors"
    if path.is_file():
        try:
            latents = load_file(path)["latents"]
        except (SafetensorError, KeyError) as error:
            # Left in place, a damaged file would fail every later run; it is only a cache, so build it again.
            warnings.warn(f"the latent cache {path} cannot be read ({type(error).__name__}: {error}); deleting it "
                          "and encoding the images again", stacklevel=2)
            path.unlink(missing_ok=True)
        else:
            if latents.shape[0] == images.shape[0]:
                return latents
    latents = encode_dataset(autoencoder, images, batch_size, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(save({"latents": latents}, metadata={"description": description})))
    return latents
