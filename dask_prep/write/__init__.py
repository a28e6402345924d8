"""Write: exact shards on the workers, the write job, commit, the output folder, formats."""
