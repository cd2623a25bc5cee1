"""Resource handlers: one module per cloud, each registered under ``occo.resources``."""
