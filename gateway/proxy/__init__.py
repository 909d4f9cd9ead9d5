"""The origins a docs request goes to (the upstream, the built folder) and the wire."""
