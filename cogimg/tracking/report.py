"""One static HTML page for a runs folder: leaderboard, figures and manifests.

The page links figures by relative path (it is read beside them, as ``runs/<job>/report.html``
next to ``figures/``), embeds the sortable leaderboard tables and shows each run's manifest
in a collapsible block. No server, no JavaScript beyond the table sort.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from cogimg.io import atomic_write_text
from cogimg.tracking.leaderboard import find_runs, leaderboard
from cogimg.tracking.tables import SORT_SCRIPT, TABLE_STYLE, ci_note, to_html_tables

PAGE_STYLE = """<style>
body { font: 14px system-ui, sans-serif; max-width: 1200px; margin: 1em auto; padding: 0 1em; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 560px; border: 1px solid #eee; }
figcaption { font-size: 12px; color: #555; }
pre { background: #f7f7f7; padding: 0.5em; overflow-x: auto; font-size: 11px; }
</style>"""


def write_report(runs_dir: str | Path, path: str | Path, figures_dir: str | Path | None = None,
                 title: str = "cogimg report", stage: str = "val", n_boot: int = 1000) -> Path:
    """Write the report for ``runs_dir`` (runs scored on their ``stage`` subjects; CIs from
    ``n_boot`` resamples) to ``path``; figures are made into ``figures_dir`` (default
    ``<runs_dir>/figures``) when it holds none."""
    runs_dir, path = Path(runs_dir), Path(path)
    figures_dir = Path(figures_dir) if figures_dir else runs_dir / "figures"
    runs, skipped = find_runs(runs_dir, stage=stage)
    if not list(figures_dir.glob("*.png")):
        from cogimg.tracking.figure_set import make_figures

        make_figures(runs_dir, figures_dir, stage=stage)
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>{len(runs)} finished run(s) under <code>{html.escape(str(runs_dir))}</code>"
             + (f"; {len(skipped)} left out (listed at the end)" if skipped else "") + ".</p>"]
    if runs:
        parts += ["<h2>Leaderboard</h2>", to_html_tables(leaderboard(runs, n_boot=n_boot)),
                  f"<p>{html.escape(ci_note(stage))} Click a column to sort.</p>"]
    from cogimg.tracking.study_stats import study_html  # a study's comparisons (study.yaml)

    parts += study_html(runs_dir)
    pngs = sorted(figures_dir.glob("*.png"))
    if pngs:
        parts.append("<h2>Figures</h2>")
        for png in pngs:
            rel = os.path.relpath(png, path.parent)
            pdf = png.with_suffix(".pdf")
            link = f' · <a href="{html.escape(os.path.relpath(pdf, path.parent))}">PDF</a>' if pdf.is_file() else ""
            parts.append(f'<figure><img src="{html.escape(rel)}" alt="{html.escape(png.stem)}">'
                         f"<figcaption>{html.escape(png.stem)}{link}</figcaption></figure>")
    parts.append("<h2>Runs</h2>")
    for run in runs:
        m = run.manifest
        summary = (f"{m.get('experiment')} · {m.get('model')} · seed {m.get('seed')} · "
                   f"{m.get('wall_s', float('nan')):.0f} s · git {str((m.get('git') or {}).get('commit'))[:10]}")
        parts.append(f"<details><summary>{html.escape(summary)} — <code>{html.escape(str(run.path))}</code>"
                     f"</summary><pre>{html.escape(json.dumps(m, indent=2))}</pre></details>")
    if skipped:
        parts.append("<h2>Left out</h2><ul>" + "".join(
            f"<li><code>{html.escape(str(f))}</code>: {html.escape(r)}</li>" for f, r in skipped) + "</ul>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"{PAGE_STYLE}{TABLE_STYLE}</head><body>{''.join(parts)}{SORT_SCRIPT}</body></html>\n")
    return atomic_write_text(path, page)
