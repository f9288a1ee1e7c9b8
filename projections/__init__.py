"""Read models rebuilt from the ledger's event sequence (issue 3 onwards)."""
