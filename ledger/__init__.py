"""The domain and the event store of subledger: no I/O, no wall clock in the domain."""
