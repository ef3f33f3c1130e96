"""Tests of the runs service."""
