"""Tokens: vocabularies and token ids for training."""
