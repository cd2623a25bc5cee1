"""Console scripts: one small module per command (argument parsing, output, exit codes)."""
