"""Evaluation metrics: pure functions on masks/labels plus per-subject tables.

``cogimg.metrics.segmentation`` holds the ISLES'22 lesion-segmentation metrics.
"""
