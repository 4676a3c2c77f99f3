"""The machinery that trains: the diffusion and autoencoder loops, run folders and checkpoints, EMA, speed
switches, data-parallel processes and the latent cache."""
