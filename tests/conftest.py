"""Shared pytest configuration."""

pytest_plugins = ["tests.cluster.plugin"]
