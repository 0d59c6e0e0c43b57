"""Regression tests for issue 14's hardening: each fails on the code before its fix."""
