"""docs-gateway: an auth gateway in front of any docs site."""
