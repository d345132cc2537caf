"""Leaderboard files: a self-contained HTML page (sortable, no external assets), Markdown, CSV, JSON,
and three plots (PNG + SVG): average accuracy against bundle size and against decode speed (Pareto front
marked), per-task deltas against native."""

from __future__ import annotations

import html
import json
from pathlib import Path

from webllama.evalsuite.leaderboard import Row, pareto_front, table, tasks_of, to_csv, to_json, to_markdown

# Sorting by clicking a header: a few lines of inline JS, so the page works from any static host.
SORT_JS = """
document.querySelectorAll('th').forEach((th, i) => th.addEventListener('click', () => {
  const tb = th.closest('table').tBodies[0], asc = th.dataset.asc !== '1';
  const key = r => { const t = r.cells[i].dataset.v ?? r.cells[i].textContent; const n = parseFloat(t);
                     return isNaN(n) ? t : n; };
  [...tb.rows].sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (asc ? 1 : -1))
    .forEach(r => tb.appendChild(r));
  th.closest('tr').querySelectorAll('th').forEach(h => delete h.dataset.asc); th.dataset.asc = asc ? '1' : '0';
}));
"""
CSS = """
body{font:14px system-ui,sans-serif;margin:2rem;color:#222} table{border-collapse:collapse}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f3f3f3;cursor:pointer} td:nth-child(-n+3){text-align:left} .sig{color:#b00;font-weight:bold}
.plots img{max-width:48%;margin-right:1%} small{color:#666}
"""


def _scatter(rows: list[Row], x_of, xlabel: str, title: str, stem: Path, x_lower_is_better: bool) -> list[Path]:
    """Average accuracy against x_of(row), one label per point, the Pareto front drawn as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    points: dict[tuple[float, float], list[str]] = {}  # rows that land on the same point share one label
    for r in rows:
        x = x_of(r)
        if x is not None and r.average is not None:
            points.setdefault((x, r.average), []).append(f"{r.model} {r.variant} {r.runtime}")
    coords = list(points)
    front = [coords[i] for i in pareto_front(coords, x_lower_is_better)]
    for (x, avg), labels in points.items():
        on_front = (x, avg) in front
        ax.scatter(x, avg, s=60 if on_front else 25, edgecolors="k" if on_front else "none")
        ax.annotate("\n".join(labels), (x, avg), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if len(front) > 1:
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=0.8, label="Pareto front")
        ax.legend(fontsize=7)
    if not points:
        ax.text(0.5, 0.5, "no rows with this measurement", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("average accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, stem)


def plot_size_vs_accuracy(rows: list[Row], out: Path) -> list[Path]:
    mb = lambda r: r.bundle_bytes / 1e6 if r.bundle_bytes else None  # noqa: E731
    return _scatter(rows, mb, "bundle size (MB)", "accuracy vs size", out / "accuracy_vs_size", x_lower_is_better=True)


def plot_speed_vs_accuracy(rows: list[Row], out: Path) -> list[Path]:
    tps = lambda r: r.bench.get("decode_tps")  # noqa: E731
    return _scatter(rows, tps, "decode tok/s (webllama bench)", "accuracy vs decode speed", out / "accuracy_vs_decode", False)


def plot_deltas(rows: list[Row], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = tasks_of(rows)
    others = [r for r in rows if r.runtime != "native" and any(s.delta is not None for s in r.scores.values())]
    fig, ax = plt.subplots(figsize=(max(6, len(tasks) * 1.2), 4))
    width = 0.8 / max(1, len(others))
    for k, r in enumerate(others):
        d = [r.scores[t].delta if t in r.scores and r.scores[t].delta is not None else 0.0 for t in tasks]
        ax.bar(np.arange(len(tasks)) + k * width, d, width, label=f"{r.model} {r.variant} {r.runtime}")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks, rotation=30, ha="right")
    ax.set_ylabel("delta vs native")
    ax.set_title("per-task delta against the original model")
    if others:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out / "deltas_vs_native")


def _save(fig, stem: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=110, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def to_html(rows: list[Row], plots: list[str]) -> str:
    head, body = table(rows)
    ths = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = []
    for row, cells in zip(rows, body, strict=True):
        tds = []
        for h, c in zip(head, cells, strict=True):
            score = row.scores.get(h)
            cls = ' class="sig"' if score is not None and score.significant else ""
            v = "" if score is None or score.value is None else f' data-v="{score.value}"'
            tds.append(f"<td{cls}{v}>{html.escape(c)}</td>")
        trs.append("<tr>" + "".join(tds) + "</tr>")
    imgs = "".join(f'<img src="{html.escape(p)}" alt="{html.escape(p)}">' for p in plots)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>webllama leaderboard</title>"
        f"<style>{CSS}</style></head><body><h1>webllama leaderboard</h1>"
        "<p><small>Rows: model x variant x runtime. Cells: score ± stderr (delta vs the native row of the same "
        "model; <span class='sig'>red</span>/* = paired test p &lt; 0.05). Click a header to sort. "
        "Also as <a href='leaderboard.md'>Markdown</a>, <a href='leaderboard.csv'>CSV</a>, "
        "<a href='leaderboard.json'>JSON</a>.</small></p>"
        f"<table id='board'><thead><tr>{ths}</tr></thead><tbody>{''.join(trs)}</tbody></table>"
        f"<div class='plots'>{imgs}</div><script>{SORT_JS}</script></body></html>\n"
    )


def write_leaderboard(rows: list[Row], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_size_vs_accuracy(rows, out) + plot_speed_vs_accuracy(rows, out) + plot_deltas(rows, out)
    files = {
        "leaderboard.md": to_markdown(rows),
        "leaderboard.csv": to_csv(rows),
        "leaderboard.json": json.dumps(to_json(rows), indent=2) + "\n",
        "index.html": to_html(rows, [p.name for p in plots if p.suffix == ".png"]),
    }
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    return [out / n for n in files] + plots
