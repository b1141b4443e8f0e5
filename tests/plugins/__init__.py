"""pytest plugins the root conftest.py loads for every test run."""
