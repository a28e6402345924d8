"""Ingest: find sources, plan partitions, convert them into records on the workers."""
