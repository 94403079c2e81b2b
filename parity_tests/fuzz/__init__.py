"""`python -m parity_tests.fuzz`: fuzz both stacks and the gateway with one set of cases.

Cases come from the OpenAPI document FastAPI publishes (schemathesis draws valid and
invalid requests for every operation) and from a fixed list of raw requests no schema
describes (`cases.raw_cases`). Each goes to Flask under gunicorn, FastAPI under uvicorn and
the gateway at 50 % (`stacks.serve`); the run fails on a 5xx the agent emulator was not
asked for, on the two stacks differing in status or `error` message, on the gateway
answering otherwise than the stack that served it does directly (`judge`), and on any of
schemathesis's checks failing on an answer to a generated case (`run.conformance`).
"""
