"""Datasets on disk: layouts, splits, the dataset index, the frame and feature caches, and batches."""
