"""deploy/prometheus passes promtool: config, rules, and a unit test for every alert."""

from __future__ import annotations

from typing import Any

import yaml

from tests.deploy.tools import DEPLOY, ROOT, require_tool, run

PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "rules" / "hookline.rules.yml"
RULE_TESTS = PROMETHEUS / "tests" / "hookline.rules.test.yml"


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_scrape_config() -> None:
    promtool = require_tool("promtool")
    assert "SUCCESS" in run(promtool, "check", "config", "prometheus.yml", cwd=PROMETHEUS)


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = require_tool("promtool")
    output = run(promtool, "check", "rules", str(RULES))
    assert f"SUCCESS: {len(alerts())} rules found" in output


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    promtool = require_tool("promtool")
    assert "SUCCESS" in run(promtool, "test", "rules", str(RULE_TESTS))


def test_every_alert_has_a_runbook_and_is_listed_in_the_runbook_index() -> None:
    index = (ROOT / "docs" / "runbooks" / "README.md").read_text()
    for rule in alerts():
        name = rule["alert"]
        assert rule["annotations"]["runbook_url"] == f"docs/runbooks/{name}.md"
        page = ROOT / "docs" / "runbooks" / f"{name}.md"
        assert page.read_text().startswith(f"# {name}\n"), name
        assert f"| {name} | {rule['labels']['severity']} |" in index, name


def test_every_alert_has_a_case_that_fires_and_one_that_stays_quiet() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    checks = [check for case in cases for check in case["alert_rule_test"]]
    for rule in alerts():
        mine = [check for check in checks if check["alertname"] == rule["alert"]]
        assert any(check["exp_alerts"] for check in mine), f"{rule['alert']} never fires"
        assert any(not check["exp_alerts"] for check in mine), f"{rule['alert']} never quiet"
