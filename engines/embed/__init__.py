"""Sentence embedding providers."""
