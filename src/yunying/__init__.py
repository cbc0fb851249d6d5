"""Yunying (运营): a self-hosted growth operations platform."""

__version__ = "0.1.0"
