"""Payment gateways behind one port (issue 4 onwards)."""
