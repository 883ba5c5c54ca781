"""Campaigns: attacks and defenses run against the device and the host references, into a results store."""
