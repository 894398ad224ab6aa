"""Kept for tools that run ``python setup.py``; the metadata is in pyproject.toml."""

from setuptools import setup

setup()
