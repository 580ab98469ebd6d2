"""Graph passes and the pipeline that orders them."""

from kcomp.passes.pipeline import PIPELINE, run_pipeline

__all__ = ["PIPELINE", "run_pipeline"]
