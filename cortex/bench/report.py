"""`cortex report results.json`: a markdown table and PNG plots of bench results."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cortex.bench.table import render_table


def load_results(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read results: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ValueError(  # noqa: TRY004  (a bad results file, reported as the CLI's error)
            f"{path}: expected an object with a 'results' list (cortex bench --out)")
    return data


def _by_policy(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in results:
        out.setdefault(row["policy"], []).append(row)
    for rows in out.values():
        rows.sort(key=lambda r: r["rate"])
    return out


def plot(results: list[dict[str, Any]], out_dir: Path, stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_policy = _by_policy(results)
    paths = []
    for key, label in (("goodput_rps", "goodput (runs/s within SLO)"),
                       ("p99_latency_s", "p99 latency (s)")):
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for policy, rows in by_policy.items():
            ax.plot([r["rate"] for r in rows], [r[key] for r in rows], marker="o", label=policy)
        ax.set_xlabel("arrival rate (runs/s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
        paths.append(_save(fig, out_dir / f"{stem}_{key.split('_')[0]}_vs_rate.png"))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    policies = list(by_policy)
    hit = [sum(r["prefix_hit_rate"] for r in rows) / len(rows) for rows in by_policy.values()]
    ax.bar(policies, hit, color="#4a7ab7")
    ax.set_ylabel("prefix hit rate (mean over rates)")
    ax.set_ylim(0, 1)
    paths.append(_save(fig, out_dir / f"{stem}_prefix_hit_rate.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def render_report(path: Path, out_dir: Path | None = None) -> tuple[str, list[Path]]:
    data = load_results(path)
    out_dir = Path(out_dir or Path(path).parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(path).stem
    images = plot(data["results"], out_dir, stem)
    cfg = data.get("config", {})
    lines = [f"# Cortex bench: {stem}", "",
             "Config: " + ", ".join(f"{k}={v}" for k, v in cfg.items()
                                    if not isinstance(v, dict)), ""]
    if "seeds" in cfg:
        lines += [(f"Rows are means over seeds {cfg['seeds']} (each seed's report is under "
                   "`per_seed` in the JSON)."), ""]
    lines += [render_table(data["results"], markdown=True), ""]
    lines += [f"![{p.stem}]({p.name})" for p in images]
    markdown = "\n".join(lines) + "\n"
    (out_dir / f"{stem}.md").write_text(markdown)
    return markdown, images
