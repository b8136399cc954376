from __future__ import annotations

import json

import pytest

from cortex.bench.accuracy import summarize_scores
from cortex.bench.report import render_report
from cortex.cli import main


def rows():
    base = {"completed": 10, "failed": 0, "rejected": 0, "timed_out": 0,
            "throughput_rps": 1.0, "slo_attainment": 0.9, "p50_latency_s": 1.0,
            "prefill_tokens_per_run": 100.0, "oracle_prefill_tokens_per_run": 50.0,
            "wall_s": 1.0}
    return [dict(base, policy=p, rate=r, goodput_rps=g, p99_latency_s=l, prefix_hit_rate=h)
            for p, r, g, l, h in [("shared-fcfs", 1, 0.9, 3.0, 0.4), ("shared-fcfs", 2, 1.1, 6.0, 0.4),
                                  ("cortex", 1, 0.95, 2.0, 0.8), ("cortex", 2, 1.8, 2.5, 0.8)]]


def test_report_writes_markdown_and_three_pngs(tmp_path):
    path = tmp_path / "res.json"
    path.write_text(json.dumps({"config": {"engines": 2}, "results": rows()}))
    markdown, images = render_report(path)
    assert "| policy |" in markdown and "| cortex | 2 |" in markdown
    assert sorted(p.name for p in images) == [
        "res_goodput_vs_rate.png", "res_p99_vs_rate.png", "res_prefix_hit_rate.png"]
    for image in images:
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "res.md").read_text() == markdown


def test_report_of_a_seeds_run_says_its_rows_are_means(tmp_path):
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps({"config": {"engines": 2, "seeds": [0, 1]}, "results": rows()}))
    markdown, _ = render_report(path)
    assert "Rows are means over seeds [0, 1]" in markdown
    assert markdown.index("Rows are means") < markdown.index("| policy |")
    path.write_text(json.dumps({"config": {"engines": 2}, "results": rows()}))
    assert "Rows are means" not in render_report(path)[0]


def test_report_rejects_non_results(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text("[1, 2]")
    assert main(["report", str(path)]) == 2
    assert "expected an object with a 'results' list" in capsys.readouterr().err


def test_accuracy_summary_by_difficulty():
    scored = [
        {"difficulty": "join", "correct": True, "first_try_ok": True, "num_fixes": 0,
         "status": "succeeded"},
        {"difficulty": "join", "correct": False, "first_try_ok": False, "num_fixes": 2,
         "status": "succeeded"},
        {"difficulty": "filter", "correct": False, "first_try_ok": False, "num_fixes": 3,
         "status": "failed"},
    ]
    summary = summarize_scores(scored, wall_s=1.0)
    assert summary["execution_accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert summary["by_difficulty"]["join"] == {"n": 2, "accuracy": 0.5}
    assert summary["first_try_success"] == pytest.approx(1 / 3, abs=1e-4)
    assert summary["mean_retries"] == pytest.approx(5 / 3, abs=1e-3)
    assert summary["fix_success_rate"] == 0.5


def test_spread_takes_every_difficulty_in_turn():
    from types import SimpleNamespace

    from cortex.bench.accuracy import spread

    qs = [SimpleNamespace(id=i, difficulty=d) for i, d in enumerate("aaabbc")]
    assert [q.id for q in spread(qs, 4)] == [0, 3, 5, 1]
    assert len(spread(qs, 100)) == 6
