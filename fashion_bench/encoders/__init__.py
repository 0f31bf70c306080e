"""CLIP encoders: an open_clip wrapper that accepts names with pretrained tags, ``hf-hub:`` names and local
checkpoints, plus tiny architectures shipped as JSON data for CPU work."""

from fashion_bench.encoders.clip import ClipEncoder, PretrainedUnavailableError, export_open_clip_checkpoint

__all__ = ["ClipEncoder", "PretrainedUnavailableError", "export_open_clip_checkpoint"]
