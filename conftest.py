"""Root conftest: the hil plugin is loaded through its pytest11 entry point (pip install -e .)."""
