"""Readers and writers at the edge: each converts one file format to and from the canonical Record."""
