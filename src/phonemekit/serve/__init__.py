"""Serving: the HTTP and WebSocket server a game talks to, and its load test."""
