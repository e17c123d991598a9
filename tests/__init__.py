"""retune test suite."""
