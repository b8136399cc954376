"""Plain-text and markdown tables of bench results."""
from __future__ import annotations

from typing import Any

COLUMNS = (
    ("policy", "policy", "{}"), ("rate", "rate", "{:g}"), ("completed", "ok", "{}"),
    ("failed", "fail", "{}"), ("rejected", "rej", "{}"), ("timed_out", "t/o", "{}"),
    ("goodput_rps", "goodput/s", "{:.3f}"), ("throughput_rps", "thruput/s", "{:.3f}"),
    ("slo_attainment", "SLO", "{:.1%}"), ("p50_latency_s", "p50 s", "{:.3f}"),
    ("p99_latency_s", "p99 s", "{:.3f}"), ("prefix_hit_rate", "hit", "{:.1%}"),
    ("prefill_tokens_per_run", "prefill/run", "{:.0f}"),
    ("oracle_prefill_tokens_per_run", "oracle/run", "{:.0f}"),
)


def _cell(fmt: str, value: Any) -> str:
    return "-" if value is None else fmt.format(value)


def render_table(results: list[dict[str, Any]], markdown: bool = False) -> str:
    header = [title for _, title, _ in COLUMNS]
    rows = [[_cell(fmt, r.get(key)) for key, _, fmt in COLUMNS] for r in results]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    fmt_row = "  ".join(f"{{:>{w}}}" for w in widths).format
    return "\n".join([fmt_row(*header)] + [fmt_row(*row) for row in rows])
