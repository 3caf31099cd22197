"""The event store adapter: the store URL, recorders, transcodings, topic names,
and every use of the `eventsourcing` library's internals."""
