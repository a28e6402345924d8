"""Runtime: where the work runs (the cluster), how it is executed, Dask graph internals."""
