"""The report toolkit of the parity suite and the load test: the one percentile
(`harness.report.stats`), the one SVG chart module (`harness.report.charts`) and pages from
autoescaped Jinja2 templates (`harness.report.page`, the shared layout in `templates/`).

Pure: no network, no asset fetched by the pages it makes; it knows nothing of the tools
that use it, nor of the gateway or the stacks. Import the module you need: `stats` is used
by the load test's hot paths and does not pull in Jinja2.
"""
