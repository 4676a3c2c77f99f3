"""What each ``tinyldm`` command runs: the presets and jobs of the pixel model, the autoencoder, the latent model,
the judge, and the demo."""
