"""One module per ``harness <verb>``. Each defines ``ORDER`` (position in --help),
``add_parser(subparsers)`` and ``run(args) -> exit code``; :mod:`harness.cli` finds
them here, so adding a verb is adding a module."""
