"""Process-level helpers that every layer from data up may import: torchrun ranks, heap growth,
quiet Hugging Face loading."""
