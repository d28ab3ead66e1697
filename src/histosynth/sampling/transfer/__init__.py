"""Zero-shot appearance transfer: class-masked AdaIN, inversion to noise, cross-image attention."""
