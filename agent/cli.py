"""``ecg-agent``: the hospital-side program.

Only ``version`` exists so far; scoring, the scheduler and the model registry come
with the agent work (see the README's roadmap).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import version

DISTRIBUTION = "ecg-clinical-knowledge"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ecg-agent",
        description="Nightly ECG scoring agent: pulls ECGs (FHIR, HL7 v2, WFDB), scores them with the exported "
        "model and writes results to SQL and FHIR.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("version", help="print the installed version")
    parser.parse_args(argv)
    print(version(DISTRIBUTION))
    return 0


if __name__ == "__main__":
    sys.exit(main())
