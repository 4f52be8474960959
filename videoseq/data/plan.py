"""The extraction plan: the one place that decides which frames a config extracts and where they live.

    plan = extraction_plan(config)
    plan.size                      # side of the cached frames: sampling.size, else the encoder's input
    plan.views("train")            # clips per training video (sampling.train_views); 1 for val and test
    FrameCache(plan.frames_dir)    # <cache_dir>/frames; frozen features in plan.features_dir

`compare`, `train`, the pipeline flow, `evaluate` and bundles all read the frame size, the views and
the cache folders from here, so what the flow extracts is exactly what compare reads.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from videoseq.config import Config, RuntimeConfig, SamplingConfig
from videoseq.models.encoders import frame_size


class ExtractionPlan(NamedTuple):
    """What extraction produces for one config, and where the caches are."""
    sampling: SamplingConfig     # T, short-video policy, sampling mode
    size: int                    # side S of the cached (T, S, S, 3) frames
    train_views: int             # clips cached per training video: view 0 + random views (>= 1)
    cache_dir: Path              # root of the frame and feature caches

    @property
    def frames_dir(self) -> Path:
        """Folder of the frame cache (`FrameCache(plan.frames_dir)`)."""
        return self.cache_dir / "frames"

    @property
    def features_dir(self) -> Path:
        """Folder of the frozen-feature cache (`FeatureStore(plan.features_dir, ...)`)."""
        return self.cache_dir / "features"

    def views(self, split: str) -> int:
        """Clips per video of `split`: `train_views` for "train", one (view 0) for every other split."""
        return self.train_views if split == "train" else 1


def default_cache_dir(runtime: RuntimeConfig) -> Path:
    """`runtime.cache_dir`, else `$VIDEOSEQ_CACHE`, else `~/.cache/videoseq`."""
    chosen = runtime.cache_dir or os.environ.get("VIDEOSEQ_CACHE") or "~/.cache/videoseq"
    return Path(chosen).expanduser()


def extraction_plan(config: Config) -> ExtractionPlan:
    """The plan of `config`: frame size from `sampling.size`, else `model.input_size`, else the
    encoder's own input size (read from the encoder registry, nothing is built)."""
    return ExtractionPlan(sampling=config.sampling, size=frame_size(config.sampling, config.model),
                          train_views=max(1, config.sampling.train_views),
                          cache_dir=default_cache_dir(config.runtime))
