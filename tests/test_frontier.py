"""``python -m benchmarks.frontier`` on a fixture folder of results files: one panel per machine,
only points whose F1 and speed come from one file, a PNG and the JSON of what was plotted."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

ROOT = Path(__file__).parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "frontier"


def test_the_frontier_command_draws_each_machine_apart_from_its_results_files(tmp_path):
    png = tmp_path / "frontier.png"
    p = subprocess.run([sys.executable, "-m", "benchmarks.frontier", "--results_dir", str(FIXTURE), "--output", str(png)],
                       capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    height, width = imread(str(png)).shape[:2]
    assert width > 2.5 * height  # three panels side by side

    out = json.loads((tmp_path / "frontier_points.json").read_text(encoding="utf-8"))
    machines = {m["machine"]: m for m in out["machines"]}
    assert set(machines) == {"machine A, 2 cores; 1 thread", "machine B, 4 cores",  # gold25 and speed-only skipped
                             "machine not recorded (onnx_speed_c.json)"}
    assert all(m["x_scale"] == "log" for m in out["machines"])

    a = {pt["label"]: pt for pt in machines["machine A, 2 cores; 1 thread"]["points"]}
    assert set(a) == {"spaCy NER, efficiency config", "student, tagger_kd defaults"}
    spacy, kd = a["spaCy NER, efficiency config"], a["student, tagger_kd defaults"]
    assert (spacy["kind"], spacy["n"], spacy["sent_per_s"]) == ("spacy", 2, 400.0)  # the 1-thread speed
    assert spacy["f1"] == pytest.approx(0.32) and spacy["f1_std"] == pytest.approx(0.028284, abs=1e-5)
    assert (kd["kind"], kd["n"], kd["f1"], kd["sent_per_s"]) == ("student", 3, pytest.approx(0.50), 3000.0)
    assert machines["machine A, 2 cores; 1 thread"]["not_dominated"] == ["student, tagger_kd defaults"]

    b = {pt["label"]: pt for pt in machines["machine B, 4 cores"]["points"]}
    assert {k: (v["kind"], v["f1"], v["sent_per_s"]) for k, v in b.items()} == {
        "teacher": ("teacher", 0.55, 200.0), "teacher, ONNX int8": ("onnx", 0.54, 450.0),
        "compact student": ("compact", pytest.approx(0.49), 7000.0)}
    assert machines["machine B, 4 cores"]["not_dominated"] == ["compact student", "teacher, ONNX int8", "teacher"]
    lo, hi = machines["machine B, 4 cores"]["x_limits"]
    assert lo < 200 and hi > 7000  # every point inside its panel
    assert "machine A, 2 cores; 1 thread: 2 points" in p.stdout and "machine B, 4 cores: 3 points" in p.stdout

    c = {pt["label"]: pt for pt in machines["machine not recorded (onnx_speed_c.json)"]["points"]}
    assert {k: (v["kind"], v["f1"], v["sent_per_s"]) for k, v in c.items()} == {  # ort_fp32 had no F1: not drawn
        "teacher, torch fp32": ("teacher", 0.51, 210.0), "teacher, ONNX int8": ("onnx", 0.50, 440.0),
        "student, torch fp32": ("student", 0.49, 3300.0)}


def test_a_point_of_an_unknown_kind_is_refused(tmp_path):
    from benchmarks.frontier import collect

    (tmp_path / "bad.json").write_text(json.dumps({"machine": "m", "points": [
        {"label": "x", "kind": "rocket", "f1": 0.5, "sent_per_s": 1.0}]}), encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json: point 'x' has kind 'rocket'"):
        collect(tmp_path)
