"""Gemini Live: one `LiveSession` per conversation, surviving GoAway and dropped sockets."""
