"""tinyldm: a small but real latent diffusion library, built one lesson at a time."""

__version__ = "0.1.0"
