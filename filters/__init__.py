"""Filters that decide which specialist annotations are kept; dropped rows keep their reason."""
