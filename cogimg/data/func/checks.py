"""The functional section of ``cogimg check``: runs, TRs, volumes, motion and atlas grid.

:func:`func_summary` scans a dataset for resting-state runs (:func:`~cogimg.data.func.bold.
scan_func`), validates each against the parcellation (given, or the one ``cogimg synth
--bold`` wrote), summarises motion per run (flagged runs are listed with their reason, as
warnings: they are kept, never dropped) and returns a JSON-ready dict whose ``problems``
follow :class:`~cogimg.data.validation.Problem`.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from cogimg.data.func.atlas import Parcellation, ParcellationError
from cogimg.data.func.bold import ATLAS_DIR, ATLAS_IMAGE, MIN_VOLUMES, _candidates, scan_func
from cogimg.data.func.timeseries import SignalConfig, motion_summary
from cogimg.data.validation import Problem


def _parcellation(root: Path, image: str | Path | None, labels: str | Path | None):
    if image is None and labels is None:
        if not (root / ATLAS_DIR / ATLAS_IMAGE).is_file():
            return None, []
        from cogimg.data.func.bold import default_parcellation

        try:
            return default_parcellation(root), []
        except ParcellationError as exc:
            return None, [Problem("error", str(ATLAS_DIR), str(exc))]
    if image is None or labels is None:
        return None, [Problem("error", str(image or labels), "a parcellation needs both the label "
                              "image and its TSV")]
    try:
        return Parcellation.load(image, labels), []
    except ParcellationError as exc:
        return None, [Problem("error", str(image), str(exc))]


def func_summary(root: str | Path, atlas: str | Path | None = None, atlas_labels: str | Path | None = None,
                 min_volumes: int = MIN_VOLUMES, config: SignalConfig | None = None) -> dict | None:
    """Check the functional data under ``root``; ``None`` when it holds no BOLD run.

    Returns:
        ``{"source", "runs", "tr_s": {TR: count}, "volumes": {T: count}, "atlas",
        "regions", "motion": [per-run rows], "problems": [Problem], "ok"}``.
    """
    root, config = Path(root), config or SignalConfig()
    paths, source = _candidates(root)
    if not paths:
        return None
    parcellation, problems = _parcellation(root, atlas, atlas_labels)
    runs, found = scan_func(root, parcellation, min_volumes)
    problems += found
    motion = [motion_summary(run, config) for run in runs]
    for row, run in zip(motion, runs):
        if row["flagged"]:
            key = str(run.confounds.relative_to(root)) if run.confounds else str(run.bold)
            problems.append(Problem("warning", key, f"high motion in {row['subject']}: {row['reason']} "
                                    "(flagged, kept)", row["subject"]))
    return {
        "source": source,
        "runs": len(runs),
        "files": len(paths),
        "tr_s": {f"{k:g}": v for k, v in sorted(Counter(r.tr_s for r in runs).items())},
        "volumes": {str(k): v for k, v in sorted(Counter(r.n_volumes for r in runs).items())},
        "atlas": str(parcellation.image) if parcellation else None,
        "regions": len(parcellation.indices) if parcellation else None,
        "motion": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}
                   for m in motion],  # NaN (unknown motion) → null in JSON
        "problems": problems,
        "ok": not any(p.severity == "error" for p in problems),
    }


def format_func_summary(func: dict) -> list[str]:
    """Lines of the ``Functional`` block of ``cogimg check``."""
    flagged = [m["subject"] for m in func["motion"] if m["flagged"]]
    atlas = (f"{func['atlas']} ({func['regions']} regions)" if func["atlas"]
             else "none (grid not checked; pass --atlas and --atlas-labels)")
    return [
        f"Functional ({func['source']}): {func['runs']} usable run(s) of {func['files']} file(s)",
        "  TR s [runs]: " + (", ".join(f"{k} [{v}]" for k, v in func["tr_s"].items()) or "-"),
        "  volumes [runs]: " + (", ".join(f"{k} [{v}]" for k, v in func["volumes"].items()) or "-"),
        f"  parcellation: {atlas}",
        f"  high motion (flagged, kept): {', '.join(flagged) if flagged else 'none'}",
        "",
    ]
