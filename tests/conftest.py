"""Test-suite conftest: pytester for plugin tests."""
pytest_plugins = ["pytester"]
