"""Load comparison of the two stacks and the gateway: `python -m load_test`.

Modules: `client` (a lean HTTP/1.1 client), `scenarios` (what users send), `engine` (closed
and open loop), `stats` (figures, pure), `targets` (the servers and the emulators, started
as processes), `bench` (one whole comparison), `results` and `report` (table, JSON, HTML),
`progress` (the live line on stderr), `ceiling` (the yardstick server for the client's
ceiling), `overhead` (the gateway's own cost, by wall clock or callgrind), `soak` and
`soak_report` (a long run watched for leaks), `stall` (the gateway with its WSGI pool
stuck), `emulators` and `a2wsgi_app` (process entry points), `locustfile` (the same
scenarios for locust).
"""
