"""The Prometheus alert rules of docs/deploy.md: they parse, every expression names metrics, labels and
label values that kefu exports, and (with promtool, from Debian's prometheus package) Prometheus accepts
them and each alert fires on the series it is about and stays quiet on healthy ones."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_OWN = {"up"}  # series Prometheus itself records for each scrape
TARGET = {"job": "kefu", "instance": "10.0.0.11:8080"}


def _rules_text() -> str:
    doc = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if b.lstrip().startswith("groups:")]
    assert len(blocks) == 1, "docs/deploy.md holds one block of alert rules"
    return blocks[0]


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(_rules_text())["groups"] for rule in group["rules"]]


def _exported() -> dict[str, list[dict[str, str]]]:
    """Sample name → the label sets of its samples, from a /metrics page with every family populated."""
    m = Metrics()
    m.push("text", "transfer", None, False, True, 0.01)
    m.push("event/subscribe", "success", "welcome", True, False, 0.01)
    m.safe("text", "transfer", 0.01)
    m.refuse(403)
    m.retries += 1
    m.render_errors += 1
    for result, errcode in (("sent", 0), ("failed", 40164), ("retry", -1), ("unsent", None)):
        m.send(result, errcode, 0.1)
    m.reloads = lambda: (3, 1, 1)
    m.ruleset = lambda: ("abc", 10, 1.0)
    m.outbox = {"pending": 1, "sent": 2, "failed": 0, "unsent": 0, "oldest_age": 3.0}
    samples: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(dict(sample.labels))
    return samples


SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def test_the_rules_parse_and_each_says_what_and_how_bad():
    rules = _rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for name in ("KefuOutboxStuck", "KefuCannotSend", "KefuSendsFailing", "KefuFallbackRateHigh",
                 "KefuReloadRefused"):  # what the issue asks to alert on
        assert name in names
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("page", "warn")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_every_expression_names_metrics_labels_and_values_kefu_exports(rule):
    exported = _exported()
    expr = rule["expr"]
    selectors = SELECTOR.findall(expr)
    assert selectors, f"{expr}: every series is selected with {{job=\"kefu\"}}"
    for metric, matchers in selectors:
        assert metric in exported or metric in PROMETHEUS_OWN, f"{metric}: kefu exports no such series"
        found = MATCHER.findall(matchers)
        assert ("job", "=", "kefu") in found
        if metric in PROMETHEUS_OWN:
            continue
        labels = exported[metric]
        for label, op, value in found:
            if label == "job":
                continue
            assert any(label in sample for sample in labels), f"{metric} has no label {label}"
            if op == "=":
                assert value in {sample[label] for sample in labels}, f"{metric}{{{label}}} is never {value!r}"
    for grouping in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        for label in (name.strip() for name in grouping.split(",")):
            assert label in ("instance", "le") or any(
                label in sample for metric, _ in selectors for sample in exported.get(metric, [])), label
    for label in re.findall(r"\$labels\.(\w+)", str(rule["annotations"])):
        assert label in ("instance", "job") or re.search(rf"\bby\s*\([^)]*\b{label}\b", expr), label


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("KEFU_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is required (KEFU_REQUIRE_PROMTOOL=1): apt-get install prometheus")
        pytest.skip("promtool is not installed (Debian: apt-get install --no-install-recommends prometheus)")
    return path


def test_prometheus_accepts_the_rules(tmp_path):
    promtool = _promtool()
    (tmp_path / "kefu.rules.yml").write_text(_rules_text(), encoding="utf-8")
    result = subprocess.run([promtool, "check", "rules", str(tmp_path / "kefu.rules.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in {**TARGET, **labels}.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _alert(rule: dict, at: str, *label_sets: dict[str, str], **labels: str) -> dict:
    """What promtool should find firing at `at`: one alert per label set, each with the rule's labels, the
    series' labels (an empty value is no label, in Prometheus) and its annotations."""
    alerts = []
    for one in label_sets or (labels,):
        values = {**TARGET, **one}
        annotations = {key: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m, v=values: v.get(m.group(1), ""), text)
                       for key, text in rule["annotations"].items()}
        alerts.append({"exp_labels": {**rule["labels"], **{k: v for k, v in one.items() if v}},
                       "exp_annotations": annotations})
    return {"eval_time": at, "alertname": rule["alert"], "exp_alerts": alerts}


def _quiet(rule: dict, at: str) -> dict:
    return {"eval_time": at, "alertname": rule["alert"], "exp_alerts": []}


def test_each_alert_fires_on_its_trouble_and_not_on_a_healthy_bot(tmp_path):
    promtool = _promtool()
    rules = {rule["alert"]: rule for rule in _rules()}
    instance = {"instance": TARGET["instance"]}
    cases = [
        ([_series("up", "1 1 0 0 0 0 0")],
         [_quiet(rules["KefuDown"], "1m"), _alert(rules["KefuDown"], "6m", **TARGET)]),
        ([_series("kefu_outbox_oldest_pending_age_seconds", "0 0 0 0+60x20")],  # stuck from minute 3 on
         [_quiet(rules["KefuOutboxStuck"], "5m"), _alert(rules["KefuOutboxStuck"], "15m")]),
        ([_series("kefu_sends_total", "0 0 0 1 2 3", result="failed", errcode="40164"),
          _series("kefu_sends_total", "0+50x5", result="sent", errcode="0")],
         [_quiet(rules["KefuCannotSend"], "1m"), _alert(rules["KefuCannotSend"], "4m", errcode="40164")]),
        ([_series("kefu_sends_total", "0+2x40", result="failed", errcode=""),  # the network
          _series("kefu_sends_total", "0+2x40", result="failed", errcode="-1"),
          _series("kefu_sends_total", "0+5x40", result="failed", errcode="45015")],  # the 48 h window: no fault
         [_quiet(rules["KefuSendsFailing"], "3m"),
          _alert(rules["KefuSendsFailing"], "30m", {"errcode": ""}, {"errcode": "-1"})]),
        ([_series("kefu_fallbacks_total", "0+8x120"),
          _series("kefu_pushes_total", "0+10x120", type="text", answer="transfer"),
          _series("kefu_pushes_total", "0+100x120", type="event/user_enter_tempsession", answer="success")],
         [_quiet(rules["KefuFallbackRateHigh"], "20m"), _alert(rules["KefuFallbackRateHigh"], "100m")]),
        ([_series("kefu_reloads_total", "0 0 1 1 1", result="refused"),
          _series("kefu_reloads_total", "0 1 1 1 1", result="loaded")],
         [_quiet(rules["KefuReloadRefused"], "1m"), _alert(rules["KefuReloadRefused"], "3m", **instance)]),
        ([_series("kefu_safe_answers_total", "0 0 0 4 9")],
         [_quiet(rules["KefuSafeAnswers"], "2m"), _alert(rules["KefuSafeAnswers"], "4m", **instance)]),
        ([_series("kefu_push_latency_seconds_bucket", "0+10x30", le="0.005"),
          _series("kefu_push_latency_seconds_bucket", "0+10x10 100+100x20", le="2.5"),
          _series("kefu_push_latency_seconds_bucket", "0+10x10 100+110x20", le="+Inf")],
         [_quiet(rules["KefuSlowAnswers"], "10m"), _alert(rules["KefuSlowAnswers"], "29m")]),
    ]
    assert {case["alertname"] for _, tests in cases for case in tests} == set(rules)  # every alert is tried
    (tmp_path / "kefu.rules.yml").write_text(_rules_text(), encoding="utf-8")
    tests = {"rule_files": ["kefu.rules.yml"], "evaluation_interval": "1m",
             "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": alerts}
                       for series, alerts in cases]}
    (tmp_path / "kefu.test.yml").write_text(yaml.safe_dump(tests, allow_unicode=True), encoding="utf-8")
    result = subprocess.run([promtool, "test", "rules", "kefu.test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
