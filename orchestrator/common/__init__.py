"""Leaf modules every room may import: display labels, store URLs, failpoints. They import
only ptcore and the standard library."""
