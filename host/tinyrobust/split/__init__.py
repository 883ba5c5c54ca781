"""The split network: a device-side head, its entropy model and coder, and the host-side tail."""
