"""Real control plane, node agent and Prometheus fixtures for the test suite."""
