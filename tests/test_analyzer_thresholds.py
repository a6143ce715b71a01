"""The thresholds file fails closed and loud: validated as a whole
(finale/analyzer/thresholds.py), refused at the analyzer's start with one line naming the entry
(exit 2), never written empty by the job."""
import copy
import json
import math

import pytest

from finale.analyzer import app as analyzer
from finale.analyzer import threshold_job as job
from finale.analyzer import thresholds as thresholds_file
from finale.analyzer.settings import Settings

GOOD = {"version": "v1", "parameters": {"window": "30 seconds", "slide": "10 seconds"},
        "thresholds": [
            {"rule": "error_rate", "scope": "global", "entity": None, "value": 0.1},
            {"rule": "error_rate", "scope": "ip", "entity": None, "value": 0.0},
            {"rule": "error_rate", "scope": "ip", "entity": "10.0.0.1", "value": 1},
            {"rule": "error_rate", "scope": "url", "entity": "/cart", "value": 0.3},
        ]}
ENTRY = "thresholds[1] (rule error_rate, scope ip, entity None)"


def with_item(**changes) -> dict:
    """GOOD with thresholds[1] changed (a value None removes the key)."""
    document = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is None:
            document["thresholds"][1].pop(key)
        else:
            document["thresholds"][1][key] = value
    return document


@pytest.mark.parametrize("document, message", [
    ([], "no 'thresholds' list"),
    ({"version": "x"}, "no 'thresholds' list"),
    ({"version": "x", "thresholds": []},
     "the 'thresholds' list is empty: no alert could ever fire"),
    ({"thresholds": ["0.3"]}, "thresholds[0]: not an object ('0.3')"),
    (with_item(value=None), f"{ENTRY}: no value"),
    (with_item(value="0.3"), f"{ENTRY}: value '0.3' is not a number"),
    (with_item(value=True), f"{ENTRY}: value True is not a number"),
    (with_item(value=math.nan), f"{ENTRY}: value nan is not finite"),
    (with_item(value=math.inf), f"{ENTRY}: value inf is not finite"),
    (with_item(value=-0.1), f"{ENTRY}: value -0.1 is outside [0, 1]"),
    (with_item(value=1.5), f"{ENTRY}: value 1.5 is outside [0, 1]"),
    (with_item(scope="host"), "thresholds[1] (rule error_rate, scope host, entity None): unknown "
                              "scope (known: global, ip, url)"),
    (with_item(rule="latency"), "thresholds[1] (rule latency, scope ip, entity None): unknown rule "
                                "(known: error_rate"),
    (with_item(entity=""), "thresholds[1] (rule error_rate, scope ip, entity ''): entity must be "
                           "null or a non-empty string"),
    # The second of the two is named: thresholds[1] becomes a copy of thresholds[2].
    (with_item(entity="10.0.0.1"), "thresholds[2] (rule error_rate, scope ip, entity '10.0.0.1'): "
                                   "a second threshold for the same rule, scope and entity"),
    ({**GOOD, "parameters": {"window": "1 minute", "slide": "10 seconds"}},
     "learned with window '1 minute', the analyzer uses --window '30 seconds': re-run "
     "threshold_job.py with --window '30 seconds'"),
    ({**GOOD, "parameters": {"window": "30 seconds", "slide": "5 seconds"}},
     "learned with slide '5 seconds', the analyzer uses --slide '10 seconds'"),
    ({**GOOD, "parameters": {"window": "half a minute"}},
     "parameters.window 'half a minute' is not an interval"),
])
def test_each_fault_is_named(document, message):
    with pytest.raises(thresholds_file.ThresholdsError) as error:
        thresholds_file.validate_thresholds(document, "30 seconds", "10 seconds")
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_valid_files_pass_and_equal_durations_are_the_same_window(tmp_path):
    thresholds_file.validate_thresholds(GOOD, "30 seconds", "10 seconds")
    thresholds_file.validate_thresholds(GOOD, "30 second", "10000 milliseconds")
    thresholds_file.validate_thresholds(GOOD)                   # no analyzer settings: not compared
    thresholds_file.validate_thresholds(thresholds_file.DEFAULT_THRESHOLDS, "1 minute", "1 minute")
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps(GOOD))
    assert [item["rule"] for item in thresholds_file.read_thresholds(path, True)["thresholds"]] == [
        "error_rate"] * 4


def test_read_thresholds_missing_file_defaults_unless_required(tmp_path):
    absent = tmp_path / "absent.json"
    assert thresholds_file.read_thresholds(absent)["version"] == "defaults"
    with pytest.raises(thresholds_file.ThresholdsError, match=f"^{absent}: no such file$"):
        thresholds_file.read_thresholds(absent, required=True)
    (tmp_path / "nan.json").write_text(
        '{"thresholds": [{"rule": "error_rate", "scope": "ip", "value": NaN}]}')
    with pytest.raises(thresholds_file.ThresholdsError,
                       match=r"nan.json: thresholds\[0\] \(rule error_rate, scope ip, entity "
                             r"None\): value nan is not finite$"):
        thresholds_file.read_thresholds(tmp_path / "nan.json")


def analyzer_error(capsys, argv) -> str:
    """The analyzer's command line refused: exit 2, one line on stderr (returned)."""
    with pytest.raises(SystemExit) as exit_info:
        analyzer.parse_args(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    return error.strip()


def test_analyzer_refuses_a_bad_file_at_start_naming_the_entry(tmp_path, capsys):
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps(with_item(value=None)))
    assert analyzer_error(capsys, ["--thresholds", str(path)]) == (
        f"spark_streaming_analyzer.py: error: --thresholds {path}: {ENTRY}: no value")
    path.write_text(json.dumps(GOOD))
    assert analyzer_error(capsys, ["--thresholds", str(path), "--window", "1 minute"]) == (
        f"spark_streaming_analyzer.py: error: --thresholds {path}: learned with window "
        "'30 seconds', the analyzer uses --window '1 minute': re-run threshold_job.py with "
        "--window '1 minute'")
    args = analyzer.parse_args(["--thresholds", str(path)])
    settings = analyzer.settings_from_args(args)
    assert (settings.thresholds_path, settings.thresholds_required) == (path, True)


def test_analyzer_explicit_missing_path_is_an_error_the_default_one_means_defaults(
        tmp_path, capsys, monkeypatch):
    absent = tmp_path / "absent.json"
    assert analyzer_error(capsys, ["--thresholds", str(absent)]) == (
        f"spark_streaming_analyzer.py: error: --thresholds {absent}: no such file")
    monkeypatch.setattr(analyzer, "DEFAULT_THRESHOLDS", absent)
    settings = analyzer.settings_from_args(analyzer.parse_args([]))
    assert (settings.thresholds_path, settings.thresholds_required) == (absent, False)


@pytest.mark.parametrize("value", ["soon", "-5 minutes", "5m"])
def test_analyzer_max_future_is_an_interval(capsys, value):
    assert analyzer_error(capsys, ["--max-future", value]) == (
        f"spark_streaming_analyzer.py: error: --max-future must be a Spark interval like "
        f"'30 seconds', got {value!r}")
    assert analyzer.settings_from_args(analyzer.parse_args(["--max-future", "1 hour"])).max_future \
        == "1 hour"
    assert Settings().max_future == "5 minutes"


def test_threshold_job_refuses_to_write_a_file_that_could_never_fire(spark, tmp_path, capsys):
    log = tmp_path / "small.log"
    # Three requests in the only window: below --min-window-requests 5, nothing can be learned.
    log.write_text("".join(
        f'10.0.0.{k} - - [28/Nov/2026:09:00:0{k} +0000] "GET /a HTTP/1.1" 200 512\n'
        for k in range(3)))
    output = tmp_path / "thresholds.json"
    assert job.main(["--input", str(log), "--output", str(output), "--window", "1 minute",
                     "--slide", "1 minute", "--min-window-requests", "5"]) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        f"threshold_job.py: error: no thresholds learned, nothing written to {output}: 3 parsed "
        "lines and no 1 minute window with >= 5 requests (--min-window-requests)\n")
    assert captured.out == "" and not output.exists()
