"""Command line interface: ``yunying ...``."""
