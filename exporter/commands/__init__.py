"""The commands of `dli-exporter`, one module per concern; `exporter.cli` assembles them into the group."""
