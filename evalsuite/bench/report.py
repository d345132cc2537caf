"""Result documents -> text: one summary line, and the side-by-side markdown table with ratios."""

from __future__ import annotations


def med(s: dict | None) -> float | None:
    return None if s is None else s["median"]


def spread(s: dict | None) -> str:
    """'median ±half-range' text of a stat (range = max - min over the runs)."""
    if s is None:
        return "n/a"
    m = s["median"]
    fmt = "{:.3g}" if m < 10 else "{:.1f}" if m < 1000 else "{:.0f}"
    return f"{fmt.format(m)} ±{fmt.format((s['max'] - s['min']) / 2)}"


def one_line(doc: dict) -> str:
    m = doc["metrics"]
    pre = ", ".join(f"{n}: {spread(s)}" for n, s in m["prefill_tokens_per_s"].items())
    return (
        f"{doc['target']['name']} {doc['variant']} {doc['runtime']}/{doc['device']} x{doc['threads']}: "
        f"load {spread(m['load_s'])} s, ttft {spread(m['ttft_s'])} s, prefill tok/s {pre}, "
        f"decode {spread(m['decode_tokens_per_s'])} tok/s, peak RSS {m['peak_rss_bytes'] / 2**20:.0f} MiB "
        f"({m.get('peak_above_baseline_bytes', 0) / 2**20:.0f} above the empty runtime), "
        f"{m['bundle_bytes'] / 2**20:.1f} MiB ({m['bytes_per_parameter'] or 0:.3f} B/param)"
    )
