"""CLIP encoders: an open_clip wrapper that accepts names with pretrained tags, ``hf-hub:`` names and local
weights files (loaded into the named architecture, or refused with the reason), plus tiny architectures shipped
as JSON for CPU work."""

from fashion_bench.encoders.clip import (
    ClipEncoder,
    PretrainedUnavailableError,
    WeightsFileError,
    export_open_clip_checkpoint,
)

__all__ = ["ClipEncoder", "PretrainedUnavailableError", "WeightsFileError", "export_open_clip_checkpoint"]
