"""`retune --version` and the operator's `--log-format json`."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from retune import __version__, cli


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"retune {__version__}\n"


def test_the_operator_logs_one_json_object_a_line(
    root_logger: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def operator(args: object) -> int:
        logging.getLogger("retune.handlers").info("target %s reconciled", "shop/cache")
        return 0

    monkeypatch.setattr(cli, "_operator", operator)
    assert cli.main(["operator", "--namespace", "shop", "--log-format", "json"]) == 0
    [line] = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["message"] == "target shop/cache reconciled"
    assert record["severity"] == "info" and "timestamp" in record


def test_the_log_format_is_text_or_json() -> None:
    with pytest.raises(SystemExit):
        cli.main(["operator", "--namespace", "shop", "--log-format", "xml"])
