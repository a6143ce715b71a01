"""finale/tools/ship.py (`make ship`): its one-line errors and its state folder. The shipping
itself, rsyslog on a real Apache log through rotations, a crash and an outage: test_site.py."""
import re
import subprocess
import sys

import pytest
from conftest import ROOT

from finale.tools import ship


def run_ship(capsys, *argv) -> tuple[int, str]:
    with pytest.raises(SystemExit) as ended:
        sys.exit(ship.main(list(argv)))
    return ended.value.code, capsys.readouterr().err


def test_a_missing_file_is_one_line_and_exit_2(capsys, tmp_path):
    code, err = run_ship(capsys, "--access-log", str(tmp_path / "nope.log"))
    assert (code, err) == (2, f"ship.py: error: --access-log {tmp_path / 'nope.log'}: "
                              "no such file\n")


def test_without_rsyslogd_the_error_names_the_packages(capsys, tmp_path, monkeypatch):
    log = tmp_path / "access.log"
    log.write_text("")
    monkeypatch.setattr(ship.shutil, "which", lambda *args, **kwargs: None)
    code, err = run_ship(capsys, "--access-log", str(log))
    assert code == 1
    assert err == ("ship.py: error: rsyslogd not found: the shipper is Debian's rsyslog with its "
                   "Kafka output, install them with `sudo apt-get install rsyslog "
                   "rsyslog-kafka`\n")


@pytest.mark.skipif(ship.shutil.which("rsyslogd", path="/usr/sbin:/sbin") is None,
                    reason="needs rsyslogd: apt-get install rsyslog")
def test_without_omkafka_the_error_names_rsyslog_kafka(capsys, tmp_path, monkeypatch):
    log = tmp_path / "access.log"
    log.write_text("")
    monkeypatch.setattr(ship, "OMKAFKA_GLOBS", (str(tmp_path / "no" / "omkafka.so"),))
    code, err = run_ship(capsys, "--access-log", str(log))
    assert code == 1
    assert err == ("ship.py: error: rsyslog's Kafka output (omkafka.so) not found: install the "
                   "package rsyslog-kafka (`sudo apt-get install rsyslog rsyslog-kafka`)\n")


@pytest.mark.skipif(ship.shutil.which("rsyslogd", path="/usr/sbin:/sbin") is None
                    or not any(ship.glob.glob(p) for p in ship.OMKAFKA_GLOBS),
                    reason="needs rsyslog and rsyslog-kafka: apt-get install rsyslog rsyslog-kafka")
def test_a_state_folder_that_cannot_be_made_is_one_line(capsys, tmp_path):
    log = tmp_path / "access.log"
    log.write_text("")
    code, err = run_ship(capsys, "--access-log", str(log), "--state-dir", str(log / "state"))
    assert code == 1
    assert err == (f"ship.py: error: cannot use {log / 'state'} for the shipper's state: "
                   "Not a directory\n")


def test_the_state_folder_name_keeps_safe_characters_only(tmp_path):
    hostile = tmp_path / "$(rm -rf ~)" / "a b;`id`..log"
    folder = ship.state_dir_for(hostile)
    assert folder.parent == ship.STATE_ROOT
    assert re.fullmatch(r"a_b__id_\.\.log-[0-9a-f]{12}", folder.name)
    # One folder per file: another path, another folder.
    assert ship.state_dir_for(tmp_path / "access.log") != ship.state_dir_for(
        tmp_path / "other" / "access.log")


def test_make_ship_without_access_log_says_how():
    result = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "ship"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == "usage: make ship ACCESS_LOG=/path/to/access.log"
