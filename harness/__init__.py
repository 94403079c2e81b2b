"""dualstack's harness: `gateway` (the product), `diff` (the diff engine shared by the parity
suite and shadow comparisons), `report` (the HTML reports' toolkit), `local` (emulators and
development tools, never in a production install)."""
