"""HTML read as a browser reads it: tokens, the open elements, head, encoding, gating."""
