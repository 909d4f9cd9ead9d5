"""Session stores: an encrypted cookie, or Redis."""
