"""Session fixtures for the nova tests: a real protocol peer on loopback (filled in by the nova handler work)."""
