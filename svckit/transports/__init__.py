"""Transports: how served things are reached (HTTP, ZeroMQ)."""
