"""One error tree for everything the user can cause, each class carrying its exit code.

``harness.cli.main`` catches :class:`HarnessError` once and exits with the error's
``exit_code`` after printing its message as one line (the traceback only with
``--debug``). A command that forgets to translate a library error therefore still
gives the documented exit code, never exit 3 ("internal error, please report").

    HarnessError                 (exit 2 unless a subclass says otherwise)
      UserError                  exit 2: a usage, configuration or input-file mistake
        harness.cli.UsageError
        harness.core.suite.ConfigError, harness.analysis.procurement.PriceError,
        harness.analysis.compare.CompareError, harness.store.baseline.BaselineError,
        harness.analysis.export.ExportError, harness.store.results.ResultFileError,
        harness.store.importers.ImportFormatError, harness.store.importers.safe_read.InputFileError,
        harness.core.registry.UnknownName, harness.core.metrics.UnknownMetric,
        harness.launch.runner.OutputNotWritable
      OutputError                exit 4: results could not be (fully) written

Each concrete class keeps its historical built-in base too (``ValueError``,
``KeyError``, ...), so code that catches those keeps working. Exit codes are in the
README ("Exit codes") and :mod:`harness.cli`. A plugin's bug (``PluginLoadError``,
any other exception) is not a user error: exit 3 with the traceback.
"""

from __future__ import annotations

EXIT_USAGE = 2
EXIT_WRITE = 4


class HarnessError(Exception):
    """Base of the errors the CLI reports as one line with :attr:`exit_code`."""

    exit_code: int = EXIT_USAGE

    def __str__(self) -> str:
        # one line, the message as given (KeyError-based classes would add quotes)
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class UserError(HarnessError):
    """A user's mistake (arguments, a suite, a price list, a result file): exit 2."""

    exit_code = EXIT_USAGE


class OutputError(HarnessError):
    """Results or a report could not be (fully) written: exit 4."""

    exit_code = EXIT_WRITE
