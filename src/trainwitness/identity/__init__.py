"""Who signed, and what code ran: Ed25519 keys and DSSE envelopes, and the training program's source identity."""
