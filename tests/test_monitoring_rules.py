"""conf/prometheus/: `promtool check rules` and `promtool test rules` (every alert of rules.yml is
unit-tested in rules_test.yml, next to it), `promtool check config` on the scrape config."""
import shutil
import subprocess

import pytest
from conftest import ROOT

PROMTOOL = shutil.which("promtool")
CONF = ROOT / "conf" / "prometheus"
pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: apt-get install -y prometheus")


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=CONF, capture_output=True, text=True, timeout=120)


def test_the_rules_are_valid():
    done = promtool("check", "rules", "rules.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 12 rules found" in done.stdout


def test_every_alert_is_unit_tested_and_passes():
    import yaml

    rules = yaml.safe_load((CONF / "rules.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]
              if "alert" in rule}
    tests = yaml.safe_load((CONF / "rules_test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    assert alerts == tested
    assert {"AnalyzerDown", "AnalyzerStalled", "BacklogGrowing", "DeadLetterRatioHigh",
            "ThresholdsReloadFailing"} <= alerts
    done = promtool("test", "rules", "rules_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_scrape_config_is_valid():
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("amtool") is None,
                    reason="amtool missing: apt-get install -y prometheus-alertmanager")
def test_the_alertmanager_example_is_valid_also_with_slack_and_email_uncommented(tmp_path):
    example = (ROOT / "conf" / "alertmanager.yml").read_text()
    uncommented = tmp_path / "alertmanager.yml"
    # The commented receivers are indented under `receivers:`: uncomment them in place.
    uncommented.write_text("\n".join(
        line.replace("    # ", "    ", 1) if line.startswith(("    # ", "    #   ")) else line
        for line in example.splitlines()))
    assert "\n    slack_configs:" in uncommented.read_text()
    assert "\n    email_configs:" in uncommented.read_text()
    for path in (ROOT / "conf" / "alertmanager.yml", uncommented):
        done = subprocess.run(["amtool", "check-config", str(path)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    assert "1 receivers" in done.stdout
