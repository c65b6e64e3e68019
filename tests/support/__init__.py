"""Helpers every test module shares (DESIGN.md §7): waiting for conditions, raw HTTP, processes."""
