"""Session fixtures for the ec2 tests: a real protocol peer on loopback (filled in by the ec2 handler work)."""
