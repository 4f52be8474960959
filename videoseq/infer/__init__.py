"""Inference with a trained bundle: classify files, evaluate on a labelled dataset, timelines."""
