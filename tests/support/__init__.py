"""Helpers the tests share: stand-ins, fixtures, real receivers and processes."""
