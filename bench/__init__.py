"""Benchmarks (``make bench``): figures printed next to nginx's, never asserted. Not part of the runtime."""
