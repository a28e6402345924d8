"""Read: open and verify datasets, padded batches, the stream, PyTorch."""
