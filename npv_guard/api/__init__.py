"""`npv-guard serve`: the HTTP pre-check API for dialers (issue 10).

Thin over the service: handlers translate JSON to `Guard` calls and back, with the same payloads
as the command line (`npv_guard.views`). No rule is decided here.
"""
