"""finale/common/spark_security.py without Spark: the properties, the private file, the one-line
errors. (The settings at work, on a real cluster with right and wrong secrets:
test_analyzer_on_spark_cluster.py.)"""
import os
import shlex
import stat

import pytest

from finale.common import spark_security as security

SECRET = "0123456789abcdef" * 4


def test_properties_are_the_committed_settings_plus_the_secret(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    assert security.security_properties(secret_file) == {
        "spark.authenticate": "true", "spark.network.crypto.enabled": "true",
        "spark.io.encryption.enabled": "true", "spark.authenticate.secret": SECRET}


@pytest.mark.parametrize("content, message", [
    (None, "no Spark secret at {path}: create it once with `make secret` (or pass --secret-file)"),
    ("short", "the Spark secret in {path} must be one word of at least 16 characters "
              "(`make secret` writes one)"),
    ("two words but long enough", "the Spark secret in {path} must be one word of at least 16 "
                                  "characters (`make secret` writes one)"),
])
def test_unusable_secret_is_one_line_naming_the_fix(tmp_path, content, message):
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    with pytest.raises(security.SecurityError) as error:
        security.security_properties(path)
    assert str(error.value) == message.format(path=path)


def test_a_conf_holding_a_secret_is_refused(tmp_path):
    conf = tmp_path / "spark-defaults.conf"
    conf.write_text(security.SECURITY_CONF.read_text() + "spark.authenticate.secret  oops\n")
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    with pytest.raises(security.SecurityError, match="must not hold spark.authenticate.secret"):
        security.security_properties(secret_file, conf)


def test_properties_file_is_private_and_removed_after(monkeypatch):
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--packages x:y:1 pyspark-shell")
    with security.spark_submit_properties({"spark.authenticate.secret": SECRET,
                                           "spark.authenticate": "true"}):
        argv = shlex.split(os.environ["PYSPARK_SUBMIT_ARGS"])
        assert argv[0] == "--properties-file"
        assert argv[2:] == ["--packages", "x:y:1", "pyspark-shell"]
        path = argv[1]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with open(path) as properties:
            assert properties.read() == (f"spark.authenticate.secret={SECRET}\n"
                                         "spark.authenticate=true\n")
    assert not os.path.exists(path)
    assert os.environ["PYSPARK_SUBMIT_ARGS"] == "--packages x:y:1 pyspark-shell"


def test_without_security_nothing_changes(monkeypatch):
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS", raising=False)
    with security.spark_submit_properties(None):
        assert "PYSPARK_SUBMIT_ARGS" not in os.environ
