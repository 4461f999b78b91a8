"""Reproducible training: synthetic or real data -> model -> integrity-checked bundle."""
