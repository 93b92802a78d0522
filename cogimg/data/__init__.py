"""Data layer: BIDS loading and validation, splits, preprocessing, cache, datamodules, synthesis."""
