"""The main job end to end through the real command line: files, report, errors, atomicity."""

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
import torch

import peap_widget as pw
from peap_widget.app.cli import main
from peap_widget.data.tokenizer import pieces, word_level_tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A random GPT-2 over the IOI / greater-than vocabulary, saved like any HF model."""
    from transformers import GPT2Config, GPT2LMHeadModel

    words = []
    for task in (pw.tasks.get("ioi", n=300, order="both"), pw.tasks.get("greater-than", n=100)):
        words += [p for tx in task.texts() for p in pieces(tx)]
    tok = word_level_tokenizer(words + pw.tasks.ioi.__globals__["NAMES"] +
                               [f"{y:02d}" for y in range(100)], text_mode=True)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2,
                                    n_head=4)).eval()
    d = tmp_path_factory.mktemp("rand_ioi_model")
    hf.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def run(*args):
    return main([str(a) for a in args])


def test_discover_writes_every_file(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc = run("discover", "--model", model_dir, "--task", "ioi", "--n", 8, "--method", "both",
             "--sizes", "0.01,0.1,0.5,1.0", "--out", out, "--quiet")
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["circuit_eap.json", "circuit_peap.json", "edges_eap.csv", "edges_peap.csv",
                            "faithfulness.csv", "faithfulness.png", "report.html", "result_eap.json.gz",
                            "result_peap.json.gz", "summary.json"])
    edges = pd.read_csv(out / "edges_peap.csv")
    assert list(edges.columns) == ["kind", "src", "dst", "src_span", "dst_span", "score"]
    res = pw.AttributionResult.load(out / "result_peap.json.gz")
    assert len(res.edges) == len(edges) and res.settings["n_examples"] == 8
    circ = pw.Circuit.load(out / "circuit_peap.json")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["peap_circuit_edges"] == circ.n_edges and summary["evaluation_examples"] == 8
    curve = pd.read_csv(out / "faithfulness.csv")
    assert set(curve.result) == {"PEAP", "EAP"} and len(curve) == 8
    page = (out / "report.html").read_text()
    assert page.count('class="peap-widget"') == 3       # the curves and one explorer per method
    # offline: no external resources
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert (out / "faithfulness.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".run.partial-*"))
    text = capsys.readouterr().out
    assert "PEAP" in text and "EAP" in text and "report.html" in text


def test_discover_greater_than_with_mean_ablation(model_dir, tmp_path):
    out = tmp_path / "gt"
    assert run("discover", "--model", model_dir, "--task", "greater-than", "--n", 6,
               "--ablation", "mean", "--sizes", "0.1,1.0", "--edges", 20, "--out", out, "--quiet",
               "--result-format", "npz") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "greater-than" and summary["ablation"] == "mean"
    assert "clean_accuracy" not in summary  # the task's own metric is a probability difference
    assert not (out / "result_peap.json.gz").exists()
    assert pw.AttributionResult.load(out / "result_peap.npz").settings["metric"] == "year_prob_diff"


def test_discover_on_a_users_file(model_dir, tmp_path):
    task = pw.tasks.get("ioi", n=8, seed=5)
    path = task.to_jsonl(tmp_path / "mine.jsonl")
    out = tmp_path / "mine"
    assert run("discover", "--model", model_dir, "--task", path, "--sizes", "0.5,1.0", "--out", out,
               "--quiet") == 0
    assert json.loads((out / "summary.json").read_text())["discovery_examples"] == 4


@pytest.mark.parametrize("args, message", [
    (["--model", "no-such-model-anywhere", "--task", "ioi"], "cannot load model 'no-such-model-anywhere'"),
    (["--task", "iou"], "unknown task 'iou'"),
    (["--task", "ioi", "--sizes", "0.1,abc"], "bad size 'abc'"),
    (["--task", "ioi", "--sizes", "1.5"], "a fraction must lie in"),
])
def test_discover_errors_are_clear_and_leave_nothing(model_dir, tmp_path, capsys, args, message):
    if "--model" not in args:
        args = ["--model", str(model_dir)] + args
    out = tmp_path / "out"
    assert run("discover", *args, "--n", 4, "--out", out, "--quiet") == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_csv_missing_a_column(model_dir, tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("prompt,correct,incorrect\nhello,a,b\n")
    assert run("discover", "--model", model_dir, "--task", tmp_path / "bad.csv", "--out",
               tmp_path / "o", "--quiet") == 2
    assert "lacks the column(s) ['length']" in capsys.readouterr().err


def test_failed_run_keeps_the_existing_folder(model_dir, tmp_path, monkeypatch):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "summary.json").write_text('{"an": "earlier run"}')
    import peap_widget.app.discover as disc

    def boom(*a, **k):
        raise pw.PeapError("simulated failure while writing the report")

    monkeypatch.setattr(disc, "write_report", boom)
    assert run("discover", "--model", model_dir, "--task", "ioi", "--n", 4, "--sizes", "1.0",
               "--out", out, "--quiet") == 2
    assert [p.name for p in out.iterdir()] == ["summary.json"]
    assert (out / "summary.json").read_text() == '{"an": "earlier run"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


def test_rerun_replaces_the_folder_and_refuses_a_foreign_one(model_dir, tmp_path, capsys):
    """A rerun replaces the whole output folder (no stale files of another method beside the
    new summary); a folder holding other files is refused untouched; folders left by killed
    runs are cleaned up."""
    out = tmp_path / "run"
    common = ["--model", model_dir, "--task", "ioi", "--n", 4, "--sizes", "1.0", "--out", out,
              "--quiet"]
    assert run("discover", *common, "--method", "eap") == 0
    assert (out / "edges_eap.csv").exists()
    killed = tmp_path / ".run.partial-abc123"          # a killed run's leftovers
    killed.mkdir()
    (killed / ".pid").write_text("999999999")
    (killed / "result_peap.json.gz.tmp").write_text("half")
    assert run("discover", *common, "--method", "peap") == 0
    assert not (out / "edges_eap.csv").exists() and (out / "edges_peap.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    assert run("discover", *common[:-3], "--out", mine, "--quiet") == 2
    assert "not a peap discover output (notes.txt)" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("text, sizes", [("0.01,0.1,1.0", [0.01, 0.1, 1.0]),
                                         ("1%,50%,100%", [0.01, 0.5, 1.0]),
                                         ("10,200", [10, 200])])
def test_sizes_are_fractions_or_counts_unambiguously(text, sizes):
    from peap_widget.app.discover import parse_sizes

    assert parse_sizes(text) == pytest.approx(sizes)
    assert [type(x) for x in parse_sizes(text)] == [type(x) for x in sizes]


def test_a_bare_one_is_refused_as_ambiguous(model_dir, tmp_path, capsys):
    assert run("discover", "--model", model_dir, "--task", "ioi", "--sizes", "0.1,1",
               "--out", tmp_path / "o", "--quiet") == 2
    assert "write 1.0 or 100% for the whole graph" in capsys.readouterr().err


def test_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "peap_widget", "tasks"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.split() == ["greater-than", "ioi"]
    r = subprocess.run([sys.executable, "-m", "peap_widget", "models"], capture_output=True, text=True)
    assert "toy-ioi" in r.stdout


def test_demo_report_is_interactive_offline(model_dir, tmp_path, chromium):
    """The report renders in Chromium from disk: curves and explorers, filterable, no errors."""
    from browser import open_standalone

    out = tmp_path / "run"
    assert run("discover", "--model", model_dir, "--task", "ioi", "--n", 8, "--method", "both",
               "--sizes", "0.01,0.1,1.0", "--out", out, "--quiet") == 0
    page = open_standalone(chromium, (out / "report.html").as_uri())
    assert page.locator(".pe-root").count() == 2 and page.locator(".pc-chart").count() == 3
    summary = json.loads((out / "summary.json").read_text())
    first = page.locator("[data-field=faithfulness]").first.inner_text()
    assert float(first) == pytest.approx(summary["peap_circuit_faithfulness"], abs=5e-4)
    before = page.locator(".peap-widget").nth(1).get_attribute("data-drawn")
    page.locator("[data-role=size-input]").first.fill("3")
    page.locator("[data-role=size-input]").first.press("Enter")
    assert page.locator(".peap-widget").nth(1).get_attribute("data-drawn") != before
    assert not page.errors
