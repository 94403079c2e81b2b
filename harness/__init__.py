"""dualstack's harness: `gateway` (the product), `diff` (the diff engine shared by the parity
suite and shadow comparisons), `local` (emulators and development tools)."""
