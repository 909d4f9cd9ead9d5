"""Sitemaps and search indexes, filtered per reader."""
