"""Hub tests: configuration, policy and the real hub on loopback."""
