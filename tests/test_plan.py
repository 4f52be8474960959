"""The extraction plan is the one rule for frame size, views and cache folders; the encoder registry's
native sizes agree with the encoders it builds."""
from __future__ import annotations

from pathlib import Path

import pytest

from videoseq.config import config_from_dict
from videoseq.data.plan import extraction_plan
from videoseq.models.encoders import build_encoder, frame_size, list_encoders, native_input_size


@pytest.mark.parametrize("name", list_encoders())
def test_native_input_size_is_what_the_built_encoder_takes(name: str) -> None:
    assert native_input_size(name) == build_encoder(name, weights=None).input_size


@pytest.mark.parametrize("sampling_size,input_size,expected", [
    (None, None, 224),     # the encoder's own size (efficientnet_lite0)
    (None, 112, 112),      # model.input_size: frames are extracted at the size the encoder reads
    (96, 112, 96),         # sampling.size wins: frames cached at 96, resized to 112 as tensors
])
def test_frame_size_rule(sampling_size, input_size, expected, tmp_path: Path) -> None:
    config = config_from_dict({"model": {"encoder": "efficientnet_lite0", "input_size": input_size},
                               "sampling": {"size": sampling_size, "train_views": 3},
                               "runtime": {"cache_dir": str(tmp_path)}})
    plan = extraction_plan(config)
    assert plan.size == frame_size(config.sampling, config.model) == expected
    assert (plan.views("train"), plan.views("val"), plan.views("test")) == (3, 1, 1)
    assert (plan.frames_dir, plan.features_dir) == (tmp_path / "frames", tmp_path / "features")


def test_the_pipeline_flow_plans_what_compare_reads(tmp_path: Path) -> None:
    """flows.pipeline.plan_extraction (a Prefect task) returns the library plan, size and views alike."""
    import json

    from flows.pipeline import plan_extraction
    from videoseq.data.dataset import DatasetIndex, VideoEntry

    config = config_from_dict({"model": {"encoder": "small_cnn", "input_size": 48},
                               "sampling": {"train_views": 2}, "runtime": {"cache_dir": str(tmp_path)}})
    entries = [VideoEntry(path=str(tmp_path / f"{s}.mp4"), label="a", split=s, group=None, status="ok",
                          num_frames=10, frames_exact=False) for s in ("train", "val", "test")]
    index = DatasetIndex(root=str(tmp_path), layout="splits", classes=["a"], entries=entries,
                         split_source="layout", min_frames=1)
    index.to_json(tmp_path / "index.json")
    planned = plan_extraction.fn(str(tmp_path / "index.json"), config.to_dict())
    plan = extraction_plan(config)
    assert planned["size"] == plan.size == 48
    assert planned["cache_root"] == str(plan.frames_dir) and planned["videos"] == 3
    videos = json.loads(Path(planned["videos_file"]).read_text())
    assert videos == [[e.path, v] for e, v in zip(entries, [2, 1, 1])]
    assert len(json.dumps(planned)) < 1000    # task results stay small JSON values, whatever the dataset
