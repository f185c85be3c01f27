"""npv-guard: stops outbound telemarketing calls that break French law before they reach the carrier."""

__version__ = "0.1.0"
