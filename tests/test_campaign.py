"""benchmarks.campaign: a plan's entries run one after another with its variables filled in; a
rerun skips finished entries; a failure is recorded and the rest still runs; the summary groups
seeds; every shipped plan loads and names only real nlp-train commands."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import campaign

ROOT = Path(__file__).resolve().parents[1]
WRITE = "import json, pathlib, sys; p = pathlib.Path(sys.argv[1]); p.mkdir(parents=True, exist_ok=True); " \
        "(p / 'metrics.json').write_text(json.dumps({'dev': {'f1': float(sys.argv[2])}, 'test': {'f1': float(sys.argv[3])}}))"


def _plan(tmp_path, runs):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"description": "test", "vars": {"RUNS": str(tmp_path / "runs")}, "runs": runs}))
    return path


def test_entries_run_in_order_resume_and_a_failure_does_not_stop_the_rest(tmp_path, capsys):
    runs = [{"name": f"a_s{s}", "output_dir": "{RUNS}/a_s" + str(s),
             "command": ["python", "-c", WRITE, "{output_dir}", str(0.5 + s / 10), str(0.4 + s / 10)]} for s in (1, 2)]
    runs.insert(1, {"name": "broken", "output_dir": "{RUNS}/broken", "command": ["python", "-c", "raise SystemExit(3)"]})
    plan = _plan(tmp_path, runs)
    summ = campaign.main([str(plan), "--json", str(tmp_path / "s.json")])
    assert [(r["name"], r["status"], r["rc"]) for r in summ["runs"]] == [("a_s1", "done", 0), ("broken", "failed", 3),
                                                                          ("a_s2", "done", 0)]
    assert summ["groups"]["a"]["runs"] == 2 and summ["groups"]["a"]["test"] == pytest.approx([0.5, 0.6])
    assert "0.550 ± 0.071" in capsys.readouterr().out  # the group's test F1 over its two seeds
    assert (tmp_path / "runs" / "broken" / "campaign.log").read_text().startswith("$ python -c")
    again = campaign.main([str(plan), "--only", "a_*"])
    assert [r["status"] for r in again["runs"]] == ["skipped (done)"] * 2


def test_variables_are_filled_and_an_unknown_one_is_named(tmp_path):
    plan = _plan(tmp_path, [{"name": "x", "output_dir": "{RUNS}/x", "command": ["nlp-train", "tagger", "--device", "{DEVICE}"]}])
    with pytest.raises(ValueError, match=r"\{DEVICE\}"):
        campaign.load_plan(plan)
    (entry,) = campaign.load_plan(plan, ["DEVICE=cpu"])
    assert entry["command"][-1] == "cpu" and entry["done"] == str(tmp_path / "runs" / "x" / "metrics.json")


@pytest.mark.parametrize("plan", sorted((ROOT / "benchmarks" / "plans").glob("*.json")), ids=lambda p: p.name)
def test_shipped_plans_load_and_call_known_commands(plan):
    from procedures.cli import nlp_train

    entries = campaign.load_plan(plan)
    assert entries
    for e in entries:
        cmd = e["command"]
        if cmd[0] == "nlp-train":
            assert cmd[1] in nlp_train.commands, cmd
            params = {o for p in nlp_train.commands[cmd[1]].params for o in (*p.opts, *p.secondary_opts)}
            unknown = [w for w in cmd[2:] if w.startswith("--") and w not in params]
            assert not unknown, f"{plan.name} {e['name']}: {unknown}"
        else:
            assert cmd[:3] == ["python", "-m", cmd[2]] and cmd[2].startswith("benchmarks."), cmd
            assert (ROOT / (cmd[2].replace(".", "/") + ".py")).is_file(), cmd
