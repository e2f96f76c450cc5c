"""Makes `pytest scenarios/` (or one scenario file) collect every scenario as a test item."""

pytest_plugins = ["harness.pytest_plugin"]
