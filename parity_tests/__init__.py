"""The parity suite: replay a corpus of requests against the legacy Flask stack and the
FastAPI stack, diff every answer and the latencies, and say whether a client could tell them
apart. `python -m parity_tests --help`; `pytest parity_tests` runs each case as a test."""
