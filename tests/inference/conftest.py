"""Fixtures of the inference tests: the easy stroke cohort and the small U-Net trained on it
(defined in ``tests/tasks/conftest.py``, shared here)."""

from tests.tasks.conftest import easy_stroke_tree, trained  # noqa: F401
