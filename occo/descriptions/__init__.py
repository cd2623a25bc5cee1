"""Loading and checking the user's files: infrastructure descriptions and node definitions."""
