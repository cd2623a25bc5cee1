"""Session fixtures for the docker tests: a real protocol peer on loopback (filled in by the docker handler work)."""
