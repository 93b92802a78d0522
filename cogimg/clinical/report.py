"""The one-page clinical report: a self-contained HTML file (figures embedded as base64 PNG,
no script, no external resource), rendered from the case's JSON report.

Sections, top to bottom: case and scan, input check (out-of-distribution banner), lesion
segmentation (count, volume, per-lesion table, figure), detections, disease classification
(calibrated probabilities, saliency figure), models and notes. Units are in every header.
"""

from __future__ import annotations

import html
from pathlib import Path

from cogimg.clinical.figures import png_data_uri
from cogimg.io import atomic_write_text

#: Lesions / detections listed at most (the JSON holds all).
MAX_ROWS = 10

STYLE = """<style>
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1b1b;
       max-width: 1080px; margin: 16px auto; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 2px; } h2 { font-size: 17px; margin: 18px 0 6px;
     border-bottom: 2px solid #d8dee4; padding-bottom: 3px; }
.sub { color: #57606a; font-size: 12px; }
.grid { display: flex; gap: 24px; flex-wrap: wrap; align-items: flex-start; }
.kv td { padding: 1px 12px 1px 0; } .kv td:first-child { color: #57606a; }
table.t { border-collapse: collapse; margin: 6px 0; } table.t th, table.t td {
  border-bottom: 1px solid #e5e8eb; padding: 3px 10px; text-align: right; }
table.t th { background: #f3f5f7; } table.t td:first-child, table.t th:first-child { text-align: left; }
.big { font-size: 26px; font-weight: 600; } .card { background: #f6f8fa; border-radius: 6px;
       padding: 8px 14px; min-width: 150px; }
.banner { border-radius: 6px; padding: 8px 14px; margin: 10px 0; font-weight: 600; }
.ok { background: #dafbe1; border: 1px solid #4ac26b; } .bad { background: #ffebe9; border: 1px solid #cf222e; }
.none { background: #fff8c5; border: 1px solid #d4a72c; } .banner ul { font-weight: 400; margin: 4px 0 0; }
img { max-width: 100%; border-radius: 4px; } .bar { display: inline-block; height: 10px;
      background: #0969da; vertical-align: middle; border-radius: 2px; }
.note { color: #57606a; font-size: 12px; }
</style>"""


def _e(value) -> str:
    return html.escape(str(value))


def _num(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _xyz(values, digits: int = 1) -> str:
    return "(" + ", ".join(f"{v:.{digits}f}" for v in values) + ")"


def _figure(folder: Path, name: str | None, alt: str) -> str:
    if not name:
        return ""
    return f'<img src="{png_data_uri(folder / name)}" alt="{_e(alt)}">'


def _ood_banner(ood: dict | None) -> str:
    if ood is None:
        return ('<div class="banner none">Input check not done: the checkpoint(s) hold no summary '
                "of their training inputs.</div>")
    unchecked = (f" Not checked (no training summary): {_e(', '.join(ood['not_checked']))}."
                 if ood.get("not_checked") else "")
    if not ood["flag"]:
        return (f'<div class="banner ok">Input check passed: the scan lies within the training data '
                f'(largest deviation {_num(ood["score"], 1)} robust SD; flagged above '
                f'{_num(ood["threshold"], 1)}).{unchecked}</div>')
    items = "".join(f"<li>{_e(r)}</li>" for r in ood["reasons"][:6])
    return (f'<div class="banner bad">OUT OF DISTRIBUTION: the scan differs from the training data '
            f'(deviation {_num(ood["score"], 1)} robust SD &gt; {_num(ood["threshold"], 1)}); '
            f"treat the results below with caution.{unchecked}<ul>{items}</ul></div>")


def _segmentation(seg: dict, folder: Path) -> str:
    lesions = sorted(seg["lesions"], key=lambda les: -les["volume_ml"])
    rows = "".join(f"<tr><td>{i}</td><td>{les['volume_ml']:.2f}</td><td>{_xyz(les['centroid_mm'])}</td></tr>"
                   for i, les in enumerate(lesions[:MAX_ROWS], 1))
    more = (f'<p class="note">… and {len(lesions) - MAX_ROWS} smaller lesion(s), listed in the JSON '
            "report.</p>" if len(lesions) > MAX_ROWS else "")
    table = (f'<table class="t"><tr><th>Lesion</th><th>Volume (mL)</th><th>Centroid x, y, z (mm, RAS)</th>'
             f"</tr>{rows}</table>{more}" if lesions else "<p>No lesion predicted.</p>")
    scan = _e(seg["reference_modality"])
    where = (f"Predicted lesion in red on the {scan} scan, axial slices through the largest lesions"
             if lesions else f"No lesion predicted: the {scan} scan, evenly spaced axial slices")
    return (f"<h2>Lesion segmentation</h2><div class='grid'>"
            f"<div class='card'>Lesions<div class='big'>{seg['n_lesions']}</div></div>"
            f"<div class='card'>Total volume<div class='big'>{seg['total_volume_ml']:.2f} mL</div></div>"
            f"<div>{table}</div></div>"
            f"{_figure(folder, seg.get('figure'), 'predicted lesions')}"
            f"<p class='note'>{where} (z in mm; L/R = patient left/right). Mask: "
            f"{_e(seg['mask'])}, on the grid of that scan.</p>")


def _detection(det: dict) -> str:
    found = sorted(det["detections"], key=lambda d: -d["score"])
    rows = "".join(
        f"<tr><td>{_e(d['label'])}</td><td>{d['score']:.2f}</td>"
        f"<td>{_xyz([(a + b) / 2 for a, b in zip(d['mm'][:3], d['mm'][3:])])}</td>"
        f"<td>{_xyz([b - a for a, b in zip(d['mm'][:3], d['mm'][3:])])}</td></tr>" for d in found[:MAX_ROWS])
    body = (f'<table class="t"><tr><th>Finding</th><th>Score (0–1)</th><th>Centre x, y, z (mm)</th>'
            f"<th>Extent (mm)</th></tr>{rows}</table>" if found else "<p>No detection.</p>")
    return f"<h2>Detected abnormal regions ({det['n_detections']})</h2>{body}"


def _classification(results: list[dict], folder: Path) -> str:
    parts = ["<h2>Disease classification</h2>"]
    for r in results:
        rows = "".join(
            f"<tr><td>{_e(c)}{' ◀' if c == r['predicted'] else ''}</td><td>{100 * p:.1f} %</td>"
            f"<td style='text-align:left'><span class='bar' style='width:{int(160 * p)}px'></span></td>"
            f"<td>{100 * r['uncalibrated_probabilities'][c]:.1f} %</td></tr>"
            for c, p in r["probabilities"].items())
        calib = (f"calibrated by temperature scaling (T = {r['temperature']:.2f}, fitted on the "
                 "validation split)" if r["calibrated"] else "NOT calibrated (no temperature in the checkpoint)")
        parts.append(
            f"<div class='grid'><div><b>{_e(r['disease'])}</b>: most likely <b>{_e(r['predicted'])}</b> "
            f"({100 * r['confidence']:.1f} %)"
            f"<table class='t'><tr><th>Class</th><th>Probability</th><th></th><th>Uncalibrated</th></tr>"
            f"{rows}</table><p class='note'>Probabilities {calib}.</p></div>"
            f"<div style='flex:1; min-width:420px'>{_figure(folder, r.get('saliency_figure'), 'saliency')}"
            + (f"<p class='note'>{_e(r.get('saliency_method', ''))} saliency: regions that raised the "
               f"score of {_e(r['predicted'])} (not a lesion map).</p>" if r.get("saliency_figure") else "")
            + "</div></div>")
    return "".join(parts)


def render_html(report: dict, folder: str | Path) -> str:
    """The report page of one case; figures are read from ``folder`` and embedded."""
    folder = Path(folder)
    scan = report.get("scan", {})
    head = (f"<h1>cogimg clinical report: {_e(report['case_id'])}</h1>"
            f"<div class='sub'>Research software, not a medical device: results must be reviewed by a "
            f"qualified clinician. Generated {_e(report['created'])} by {_e(report['software'])}.</div>"
            f"<table class='kv'><tr><td>Input</td><td>{_e(report['input'])}</td></tr>"
            f"<tr><td>Scan</td><td>{_e(scan.get('reference_modality', '?'))}, "
            f"{' × '.join(str(s) for s in scan.get('shape', []))} voxels of "
            f"{' × '.join(f'{v:.2f}' for v in scan.get('spacing_mm', []))} mm</td></tr></table>")
    parts = [head, _ood_banner(report.get("ood"))]
    if "segmentation" in report:
        parts.append(_segmentation(report["segmentation"], folder))
    if "detection" in report:
        parts.append(_detection(report["detection"]))
    if report.get("classification"):
        parts.append(_classification(report["classification"], folder))
    models = "".join(f"<tr><td>{_e(m['role'])}</td><td>{_e(Path(m['checkpoint']).name)}</td>"
                     f"<td>{_e(m['preset'])}</td><td>{_e(', '.join(m['modalities']))}</td></tr>"
                     for m in report["models"])
    parts.append(f"<h2>Models</h2><table class='t'><tr><th>Role</th><th>Checkpoint</th><th>Preset</th>"
                 f"<th>Inputs</th></tr>{models}</table>")
    if report.get("warnings"):
        parts.append("<ul class='note'>" + "".join(f"<li>{_e(w)}</li>" for w in report["warnings"]) + "</ul>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>cogimg report {_e(report['case_id'])}</title>{STYLE}</head><body>"
            + "".join(parts) + "</body></html>\n")


def write_html(report: dict, folder: str | Path, path: str | Path) -> Path:
    """:func:`render_html` written atomically to ``path``."""
    return atomic_write_text(path, render_html(report, folder))


__all__ = ["render_html", "write_html"]
