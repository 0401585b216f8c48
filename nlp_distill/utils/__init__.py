"""Process-level helpers below every other layer: torchrun ranks, heap growth, quiet HF loading."""
