"""One error tree (harness/errors.py): every user error carries its exit code and is
caught once by the CLI, so a command that forgets to translate one still exits 2."""

from __future__ import annotations

import pytest

from harness import cli, errors
from harness.store.baseline import BaselineError
from harness.analysis.compare import CompareError
from harness.analysis.export import ExportError
from harness.store.importers import ImportFormatError
from harness.store.importers.safe_read import InputFileError
from harness.core.metrics import UnknownMetric
from harness.analysis.procurement import PriceError
from harness.core.registry import PluginLoadError, UnknownName
from harness.store.results import ResultFileError
from harness.launch.runner import OutputNotWritable
from harness.core.suite import ConfigError

USER_ERRORS = [
    (cli.UsageError, Exception), (ConfigError, ValueError), (PriceError, ValueError),
    (CompareError, ValueError), (BaselineError, Exception), (ExportError, Exception),
    (ResultFileError, Exception), (ImportFormatError, ValueError), (InputFileError, ValueError),
    (UnknownName, ValueError), (UnknownMetric, KeyError), (OutputNotWritable, Exception),
]


@pytest.mark.parametrize("cls, old_base", USER_ERRORS, ids=lambda c: getattr(c, "__name__", ""))
def test_every_user_error_is_in_the_tree_and_keeps_its_old_base(cls, old_base) -> None:
    assert issubclass(cls, errors.UserError) and issubclass(cls, old_base)
    assert cls("x").exit_code == cli.EXIT_USAGE == 2
    assert str(cls("one line: what is wrong")) == "one line: what is wrong"  # no KeyError quotes


@pytest.mark.parametrize("cls, old_base", USER_ERRORS, ids=lambda c: getattr(c, "__name__", ""))
def test_an_untranslated_user_error_is_one_line_and_exit_2(cls, old_base, monkeypatch, capsys) -> None:
    from harness.commands import env as env_cmd

    def raises(args):
        raise cls("bad thing in f.yaml:3; choose from: a, b")

    monkeypatch.setattr(env_cmd, "run", raises)
    assert cli.main(["env"]) == 2
    err = capsys.readouterr().err
    assert err == "harness env: error: bad thing in f.yaml:3; choose from: a, b\n"


def test_an_output_error_is_exit_4(monkeypatch, capsys) -> None:
    from harness.commands import env as env_cmd

    def raises(args):
        raise errors.OutputError("could not write r.json: No space left on device")

    monkeypatch.setattr(env_cmd, "run", raises)
    assert cli.main(["env"]) == cli.EXIT_WRITE == 4
    assert capsys.readouterr().err.strip() == "harness env: error: could not write r.json: No space left on device"


def test_a_broken_plugin_is_not_a_user_error() -> None:
    # a plugin that fails to import is a bug (exit 3 with the traceback), not a typo
    assert not issubclass(PluginLoadError, errors.HarnessError)


@pytest.mark.parametrize("verb", [
    ["report", "{r}", "--format", "markdown", "-o", "{d}/r.md"],
    ["compare", "{r}", "{r}", "-o", "{d}/c.md"],
    ["export", "{r}", "--format", "csv", "-o", "{d}/c.csv"],
])
def test_an_output_path_in_a_missing_directory_is_one_line_not_a_crash(verb, tmp_path, capsys) -> None:
    # `report --format markdown -o` into a missing directory was exit 3 with a traceback
    from tests.conftest import ROOT

    r = str(ROOT / "tests" / "fixtures" / "fuzz" / "result.json")
    d = str(tmp_path / "no" / "such" / "dir")
    code = cli.main([a.format(r=r, d=d) for a in verb])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "internal error" not in err, err
    line = err.strip().splitlines()[-1]
    assert "cannot write" in line and "No such file or directory" in line, err


def test_an_html_report_creates_its_directory(tmp_path, capsys) -> None:
    from tests.conftest import ROOT

    r = str(ROOT / "tests" / "fixtures" / "fuzz" / "result.json")
    out = tmp_path / "new" / "dir" / "r.html"
    assert cli.main(["report", r, "-o", str(out)]) == 0
    assert out.is_file() and out.read_text().startswith("<!DOCTYPE html")
