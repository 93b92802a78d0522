"""Leaderboard rendering: Markdown, CSV, LaTeX (booktabs) and a sortable HTML table.

Input is :func:`cogimg.tracking.leaderboard.leaderboard`'s frame; one table per task kind
(their metrics differ). Metric cells read ``mean ± std [CI low, CI high]`` (std over seeds,
95 % bootstrap CI over subjects; ``±`` omitted for a single seed).
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd

from cogimg.io import atomic_write_text
from cogimg.tracking.leaderboard import KINDS

RESOURCE_COLUMNS = (("params_M", "params (M)", "{:.2f}"), ("train_s", "train (s)", "{:.0f}"),
                    ("latency_s", "latency (s)", "{:.3f}"), ("peak_memory_gb", "peak memory (GiB)", "{:.2f}"))


def _number(value, fmt: str = "{:.3f}") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def metric_cell(row: pd.Series, metric: str, with_ci: bool = True) -> str:
    mean = row.get(f"{metric}_mean")
    if mean is None or pd.isna(mean):
        return "–"
    text = _number(mean)
    if pd.notna(row.get(f"{metric}_std")):
        text += f" ± {_number(row[f'{metric}_std'])}"
    if with_ci and pd.notna(row.get(f"{metric}_ci_low")):
        text += f" [{_number(row[f'{metric}_ci_low'])}, {_number(row[f'{metric}_ci_high'])}]"
    return text


def _sections(table: pd.DataFrame):
    """(kind, headers, rows of cell strings, sort keys) per task kind present in ``table``."""
    for kind_name, part in table.groupby("kind", sort=False):
        kind = KINDS[kind_name]
        metrics = [m for m in (kind.primary, *kind.secondary) if f"{m}_mean" in part and part[f"{m}_mean"].notna().any()]
        headers = ["rank", "experiment", "model", "variant", "seeds",
                   *(kind.labels[m] + (" (95% CI)" if m == kind.primary else "") for m in metrics),
                   *(label for _, label, _ in RESOURCE_COLUMNS)]
        rows, keys = [], []
        for _, r in part.iterrows():
            rows.append([str(r["rank"]), r["experiment"], r["model"], r["variant"], str(r["n_seeds"]),
                         *(metric_cell(r, m, with_ci=m == kind.primary) for m in metrics),
                         *(_number(r.get(c), fmt) for c, _, fmt in RESOURCE_COLUMNS)])
            keys.append([r["rank"], r["experiment"], r["model"], r["variant"], r["n_seeds"],
                         *(r.get(f"{m}_mean") for m in metrics), *(r.get(c) for c, _, _ in RESOURCE_COLUMNS)])
        yield kind, headers, rows, keys


def stage_word(stage: str) -> str:
    """``validation`` or ``test``: the subjects a ``stage`` (``val``/``test``) scores."""
    return "validation" if stage == "val" else "test"


def ci_note(stage: str = "val") -> str:
    """What the cells mean, for runs scored on their ``stage`` (``val``/``test``) subjects."""
    return (f"Mean ± std over seeds; [95% CI]: percentile bootstrap over {stage_word(stage)} subjects "
            "of the seed-averaged metric.")


def to_markdown(table: pd.DataFrame, stage: str = "val") -> str:
    out = []
    for kind, headers, rows, _ in _sections(table):
        out += [f"### {kind.name} (ranked by {kind.labels[kind.primary]})", "",
                "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(cells) + " |" for cells in rows]
        out.append("")
    out.append(ci_note(stage))
    return "\n".join(out) + "\n"


def _latex_escape(text: str) -> str:
    for char, repl in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"),
                       ("#", r"\#"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"),
                       ("^", r"\textasciicircum{}")):
        text = text.replace(char, repl)
    return text.replace("±", r"$\pm$").replace("–", "--")


def to_latex(table: pd.DataFrame) -> str:
    """One ``booktabs`` tabular per task kind (needs ``\\usepackage{booktabs}``)."""
    out = []
    for kind, headers, rows, _ in _sections(table):
        out += [f"% {kind.name}: ranked by {kind.labels[kind.primary]}",
                r"\begin{tabular}{" + "r" + "l" * 3 + "r" * (len(headers) - 4) + "}", r"\toprule",
                " & ".join(_latex_escape(h) for h in headers) + r" \\", r"\midrule"]
        out += [" & ".join(_latex_escape(c) for c in cells) + r" \\" for cells in rows]
        out += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(out)


SORT_SCRIPT = """<script>
// Click a header to sort by it (numbers numerically, again to reverse).
document.querySelectorAll("table.leaderboard th").forEach((th, col) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0];
  const asc = th.dataset.order !== "asc"; th.dataset.order = asc ? "asc" : "desc";
  const key = tr => { const v = tr.cells[col].dataset.sort; const n = parseFloat(v); return isNaN(n) ? v : n; };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    return (x > y ? 1 : x < y ? -1 : 0) * (asc ? 1 : -1); }).forEach(tr => body.appendChild(tr));
}));
</script>"""
TABLE_STYLE = """<style>
table.leaderboard { border-collapse: collapse; font: 13px system-ui, sans-serif; margin: 0 0 1.5em; }
table.leaderboard th, table.leaderboard td { padding: 4px 8px; border-bottom: 1px solid #ddd; text-align: right; }
table.leaderboard th { cursor: pointer; background: #f4f4f4; position: sticky; top: 0; }
table.leaderboard td:nth-child(2), table.leaderboard td:nth-child(3), table.leaderboard td:nth-child(4) { text-align: left; }
</style>"""


def to_html_tables(table: pd.DataFrame) -> str:
    """The leaderboard tables as an HTML fragment (sortable once :data:`SORT_SCRIPT` runs)."""
    out = []
    for kind, headers, rows, keys in _sections(table):
        out.append(f"<h3>{html.escape(kind.name)} (ranked by {html.escape(kind.labels[kind.primary])})</h3>")
        out.append('<table class="leaderboard"><thead><tr>'
                   + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr></thead><tbody>")
        for cells, sort_keys in zip(rows, keys):
            tds = "".join(f'<td data-sort="{html.escape("" if pd.isna(k) else str(k))}">{html.escape(c)}</td>'
                          for c, k in zip(cells, sort_keys))
            out.append(f"<tr>{tds}</tr>")
        out.append("</tbody></table>")
    return "\n".join(out)


def to_html(table: pd.DataFrame, title: str = "cogimg leaderboard", stage: str = "val") -> str:
    """A standalone sortable HTML page."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"{TABLE_STYLE}</head><body><h2>{html.escape(title)}</h2>{to_html_tables(table)}"
            f"<p>{html.escape(ci_note(stage))} Click a column to sort.</p>{SORT_SCRIPT}</body></html>\n")


def write_leaderboard(table: pd.DataFrame, out_dir: str | Path, stage: str = "val") -> dict[str, Path]:
    """``leaderboard.md|csv|tex|html`` in ``out_dir`` (each written atomically)."""
    out_dir = Path(out_dir)
    return {"md": atomic_write_text(out_dir / "leaderboard.md", to_markdown(table, stage)),
            "csv": atomic_write_text(out_dir / "leaderboard.csv", table.to_csv(index=False)),
            "tex": atomic_write_text(out_dir / "leaderboard.tex", to_latex(table)),
            "html": atomic_write_text(out_dir / "leaderboard.html", to_html(table, stage=stage))}
