"""Model definitions (autoencoder, denoisers) and the model-folder contract."""
