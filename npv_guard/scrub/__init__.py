"""`npv-guard scrub`: decide a whole lead list, read-only (see `command`).

- `leads`: reading and sniffing the lead file (encoding, BOM, delimiter, header, columns);
- `batch`: deciding the leads in batches through `Guard.decide_many`, on worker processes for a
  large file;
- `summary`: the counts printed at the end;
- `command`: the command's arguments, checks and atomic output.
"""

from npv_guard.scrub.batch import BATCH, BatchDecider, Campaign, NextAllowed, ScrubFailed
from npv_guard.scrub.command import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Scrubber, add_parser, run
from npv_guard.scrub.leads import ADDED_COLUMNS, LeadFile, ScrubUsage
from npv_guard.scrub.summary import Summary

__all__ = [
    "ADDED_COLUMNS",
    "BATCH",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "BatchDecider",
    "Campaign",
    "LeadFile",
    "NextAllowed",
    "ScrubFailed",
    "ScrubUsage",
    "Scrubber",
    "Summary",
    "add_parser",
    "run",
]
