"""Config managers: registered under ``occo.configmanagers``."""
