"""The chaos suite (issue 17): bounded forms in CI (``test_chaos.py``), long forms by ``python -m tests.chaos --full``."""
