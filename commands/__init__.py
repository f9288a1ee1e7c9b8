"""The front door: command schemas, handlers, settings and bootstrap, the CLI and the demo."""
