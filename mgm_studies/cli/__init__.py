"""`mgm-studies`: train, validate, evaluate and sample runs; sweep a study, follow it, report it.
Exit codes: 0 success, 2 invalid input, 1 other failure.

Each verb lives with its kind: `train.py` (a run config: train, validate, train-extractor), `models.py` (a finished
run's model: evaluate, sample), `studies.py` (a search space: sweep, status, report); its handler's docstring is its
`--help` description. `arguments.py` holds their argument types, so a bad value is refused by the parser.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from mgm_studies.cli import models, studies, train
from mgm_studies.cli.arguments import EPILOG
from mgm_studies.configbase import ConfigError


def build_parser() -> argparse.ArgumentParser:
    # Not exit_on_error (nor in any verb's parser): a value an argument's type refuses raises ArgumentError, which
    # `main` reports as invalid input.
    description = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="mgm-studies", description=description, epilog=EPILOG, exit_on_error=False)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in (train, models, studies):
        module.add_verbs(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except argparse.ArgumentError as exc:
        return _invalid([(exc.argument_name, exc.message)])
    except ConfigError as exc:
        return _invalid(exc.problems)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("MGM_STUDIES_DEBUG"):
            traceback.print_exc()
        print(f"mgm-studies: error: {exc}", file=sys.stderr)
        return 1


def _invalid(problems: list[tuple[str | None, str]]) -> int:
    print("mgm-studies: invalid input", file=sys.stderr)
    for field, message in problems:
        print(f"  {field or '(config)'}: {message}", file=sys.stderr)
    return 2
