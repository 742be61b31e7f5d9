"""The gateway: API keys, per-key limits, rented upstreams and the cost of every request."""
