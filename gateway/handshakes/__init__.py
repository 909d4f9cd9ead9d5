"""Login handshakes: jwt, shared_session, oauth."""
