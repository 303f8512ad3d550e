"""Helpers shared by the test suite (capture readers, fakes of external servers)."""
