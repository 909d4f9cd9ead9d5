"""The configuration: its model, the YAML reader, and the checks that load it."""
