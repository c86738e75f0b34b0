"""Pixel-level autoregression: the Image Transformer (served) and PixelCNN (baseline)."""
