"""optiscape data: synthetic regression tasks, batching; later text sources."""
