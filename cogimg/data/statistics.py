"""Statistics of a loaded BIDS-like dataset (what ``cogimg check`` prints).

:func:`summarise` gives subjects per diagnosis and site, shapes and spacings per modality,
label statistics (foreground voxels, volume in mL, 26-connected components), problems and
skipped files; :func:`check_split_file` checks a split file against the dataset (leakage,
unknown IDs); :func:`format_summary` renders both as text.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path


def dataset_ok(summary: dict) -> bool:
    """No error in the dataset nor in its split file (when one was checked)."""
    return bool(summary["ok"] and summary.get("split", {}).get("ok", True))


def summarise(dataset, *, read_labels: bool = True) -> dict:
    """JSON-ready summary of a :class:`~cogimg.data.bids.BIDSDataset`.

    Label statistics (foreground voxels, volume in mL, 26-connected components) re-read the
    label files unless ``read_labels`` is false.
    """
    subjects = dataset.subjects
    by_participant = {s["participant_id"]: s for s in subjects}
    summary: dict = {
        "root": str(dataset.root),
        "participants": len(by_participant),
        "sessions": len(subjects),
        "diagnoses": _counts(subjects, "diagnosis"),
        "sites": _counts(subjects, "site"),
        "modalities": {},
        "labels": {},
        "problems": [
            {"severity": p.severity, "path_or_key": p.path_or_key, "message": p.message}
            for p in dataset.problems
        ],
        "skipped": [{"path": path, "reason": reason} for path, reason in dataset.skipped],
        "ok": not dataset.errors,
    }
    for modality in dataset.modalities():
        infos = [
            dataset.summaries[str(s[modality].path)]
            for s in subjects
            if modality in s["modalities"]
        ]
        summary["modalities"][modality] = {
            "sessions": len(infos),
            "shapes": dict(Counter(_fmt_shape(i.shape) for i in infos).most_common()),
            "spacings_mm": dict(Counter(_fmt_spacing(i.spacing_mm) for i in infos).most_common()),
        }
    for key in dataset.label_keys():
        labelled = [s for s in subjects if key in s["labels"]]
        stats = (
            _label_stats([str(s[key].path) for s in labelled])
            if read_labels
            else [{}] * len(labelled)
        )
        summary["labels"][key] = {
            "sessions": len(labelled),
            "per_subject": [
                {"subject_id": s["subject_id"], **st} for s, st in zip(labelled, stats, strict=True)
            ],
        }
    return summary


def _counts(subjects, key: str) -> dict[str, dict[str, int]]:
    sessions = Counter(str(s[key]) for s in subjects)
    participants = Counter(str(s[key]) for s in {s["participant_id"]: s for s in subjects}.values())
    return {k: {"participants": participants[k], "sessions": sessions[k]} for k in sorted(sessions)}


def _label_stats(paths: list[str]) -> list[dict]:
    """Foreground voxels, volume (mL) and 26-connected components of each label file, in threads."""
    from concurrent.futures import ThreadPoolExecutor

    import nibabel as nib
    import numpy as np
    from scipy import ndimage

    def one(path: str) -> dict:
        img = nib.load(path)
        foreground = np.asanyarray(img.dataobj) > 0
        voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
        _, components = ndimage.label(foreground, structure=np.ones((3, 3, 3), dtype=bool))
        voxels = int(foreground.sum())
        return {
            "voxels": voxels,
            "volume_ml": round(voxels * voxel_ml, 4),
            "components": int(components),
        }

    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        return list(pool.map(one, paths))


def check_split_file(path: str | Path, dataset) -> dict:
    """Leakage and coverage of a split file against the dataset's subject-sessions:
    ``{"path", "ok", "errors": [one line each]}`` (a missing or malformed file is an error)."""
    from cogimg.data.participants import sessions_table
    from cogimg.data.splits import LeakageError, check_leakage, load_split

    errors: list[str] = []
    try:
        split = load_split(path)
        sessions = sessions_table(dataset.subjects)
        if split.group in sessions:
            listed = set(split.test) | {
                i for f in split.folds for s in ("train", "val", "test") for i in f.get(s, [])
            }
            unknown = sorted(listed - set(sessions[split.group].astype(str)))
            if unknown:
                errors.append(
                    f"{len(unknown)} {split.group} value(s) in the split have no subject "
                    "in the dataset: "
                    + ", ".join(unknown[:20])
                    + (" …" if len(unknown) > 20 else "")
                )
        check_leakage(split, sessions if len(sessions) else None)
    except LeakageError as exc:
        errors.extend(exc.problems)
    except (OSError, ValueError) as exc:  # missing file, SplitFormatError, bad table
        return {"path": str(path), "ok": False, "errors": [str(exc)]}
    return {"path": str(path), "ok": not errors, "errors": errors}


def format_summary(summary: dict) -> str:
    """Human-readable report of :func:`summarise`'s output."""
    lines = [
        f"Dataset {summary['root']}",
        (
            f"  {summary['sessions']} subject-session(s) from {summary['participants']} "
            "participant(s) loaded"
        ),
        "",
    ]
    for title, table in (("diagnosis", summary["diagnoses"]), ("site", summary["sites"])):
        lines += _table(
            [title, "participants", "sessions"],
            [[k, v["participants"], v["sessions"]] for k, v in table.items()],
        )
    lines += _table(
        ["modality", "sessions", "shape (X, Y, Z) [count]", "spacing mm [count]"],
        [
            [k, v["sessions"], _fmt_counts(v["shapes"]), _fmt_counts(v["spacings_mm"])]
            for k, v in summary["modalities"].items()
        ],
    )
    label_rows = []
    for key, info in summary["labels"].items():
        per = info["per_subject"]
        nonempty = sum(p["voxels"] > 0 for p in per) if per and "voxels" in per[0] else "-"
        label_rows.append(
            [
                key,
                info["sessions"],
                nonempty,
                _fmt_range(per, "voxels"),
                _fmt_range(per, "volume_ml"),
                _fmt_range(per, "components"),
            ]
        )
    lines += _table(
        ["label", "sessions", "non-empty", "voxels", "volume mL", "components (26-conn.)"],
        label_rows,
    )
    if len(summary["labels"]) and summary["sessions"] > 1:
        lines[-1:] = [
            "  (one value when all sessions agree, else median [min–max] over sessions)",
            "",
        ]

    problems = summary["problems"]
    n_err = sum(p["severity"] == "error" for p in problems)
    lines.append(f"Problems: {n_err} error(s), {len(problems) - n_err} warning(s)")
    lines += [
        f"  {p['severity']}: {p['path_or_key']}: {p['message']}"
        for p in sorted(problems, key=lambda p: p["severity"] != "error")
    ]
    lines.append(f"Skipped: {len(summary['skipped'])} file(s) or folder(s)")
    lines += [f"  {s['path']}: {s['reason']}" for s in summary["skipped"]]
    if "split" in summary:
        split = summary["split"]
        lines.append(f"Split {split['path']}: {'no leakage' if split['ok'] else 'ERRORS'}")
        lines += [f"  error: {e}" for e in split["errors"]]
    lines += ["", "OK: no errors" if dataset_ok(summary) else "FAILED: fix the errors above"]
    return "\n".join(lines)


def _table(header: list[str], rows: list[list]) -> list[str]:
    """Indented left-aligned columns sized to their content, a blank line; ``(none)`` if no rows."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in cells]
    return ["  " + line for line in text] + (["  (none)"] if not rows else []) + [""]


def _fmt_shape(shape) -> str:
    return "×".join(str(s) for s in shape)


def _fmt_spacing(spacing) -> str:
    return "×".join(f"{s:.3g}" for s in spacing)


def _fmt_counts(counts: dict[str, int]) -> str:
    items = list(counts.items())
    text = ", ".join(f"{k} [{n}]" for k, n in items[:3])
    return text + (f", +{len(items) - 3} more" if len(items) > 3 else "")


def _fmt_range(per_subject: list[dict], key: str) -> str:
    """One value, or median [min–max] over subjects; '-' when not computed."""
    import numpy as np

    values = [p[key] for p in per_subject if key in p]
    if not values:
        return "-"
    if len(set(values)) == 1:
        return f"{values[0]:g}"
    return f"{np.median(values):g} [{min(values):g}–{max(values):g}]"
