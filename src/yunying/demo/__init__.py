"""Demo data: the seeds' short-video editing app, generated deterministically for a seed."""

from yunying.demo.catalog import CHANNELS, Channel
from yunying.demo.generator import InvalidDemo, generate_demo
from yunying.demo.report import print_summary

__all__ = ["CHANNELS", "Channel", "InvalidDemo", "generate_demo", "print_summary"]
