"""The conversation log: the record, the writer, the follower, annotations, forgetting."""
