"""Large images: random-patch sampling over big latents, seamless decoding, slide output."""
