"""`python -m parity_tests`: see `parity_tests.cli`."""

from __future__ import annotations

import sys

from parity_tests.cli import main

if __name__ == "__main__":
    sys.exit(main())
