"""`python -m harness.emulators`: the local emulators' command line under a shorter name.

An alias, nothing more: the same flags, output and exit codes as
`python -m harness.local.emulators` (see there), `--print-setup` among them.
"""

from __future__ import annotations

import sys

from harness.local.emulators.__main__ import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
