"""Anti-fraud (风控): signals, per-activity policy, review queue, blocklist."""
