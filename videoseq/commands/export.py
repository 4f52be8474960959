"""`videoseq export RUN_OR_BUNDLE --out PATH [--format onnx|torchscript] [--part model|head]`: write a
trained model as one graph (infer/export.py) plus a `.json` beside it with classes, sampling and
preprocessing; `videoseq classify --runtime onnx --model PATH` runs an ONNX export without PyTorch.
"""
from __future__ import annotations

import argparse
import json

HELP = "export a model bundle (or a run folder's best head) to ONNX or TorchScript"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of `videoseq export` to `p`."""
    p.add_argument("model", metavar="RUN_OR_BUNDLE",
                   help="a model bundle, or a run folder (its head with the best validation accuracy)")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="the graph to write, e.g. model.onnx; its description goes to PATH with suffix .json")
    p.add_argument("--format", default="onnx", metavar="onnx|torchscript",
                   help="onnx (ONNX Runtime, no PyTorch needed to run it) or torchscript (default: onnx)")
    p.add_argument("--part", default="model", metavar="model|head",
                   help="model: frames (B, T, S, S, 3) uint8 + mask -> probabilities and per-step beliefs; "
                        "head: features (B, T, D + M) + mask -> the same (default: model)")
    p.add_argument("--head", help="with a run folder: the head to export (e.g. per_frame, lstm)")
    p.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset (default: 17)")
    p.add_argument("--json", action="store_true", help="print the written description (the .json) instead")


def run(args: argparse.Namespace) -> int:
    """Run `videoseq export`; return 0. A bad bundle, format, part or head raises a `VideoseqError`
    (one line, exit 2 from `videoseq.cli`)."""
    from videoseq.infer.export import OPSET, export_bundle
    from videoseq.infer.onnx_model import read_export_meta, sidecar_path

    out = export_bundle(args.model, args.out, format=args.format, part=args.part, head=args.head,
                        opset=args.opset or OPSET)
    meta = read_export_meta(out)
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    what = "the whole model" if args.part == "model" else "the head alone"
    opset = f", opset {meta['export']['opset']}" if args.format == "onnx" else ""
    print(f"exported {meta['head']} ({what}, {args.format}{opset}) to {out}; "
          f"classes, sampling and preprocessing in {sidecar_path(out)}")
    return 0
