"""Tests of the OpenSIPS configs in `opensips/` and the OpenSIPS tables in `sql/`."""
