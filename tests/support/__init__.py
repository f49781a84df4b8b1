"""Test helpers shared by several suites (no pytest import needed)."""
