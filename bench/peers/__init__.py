"""Peer servers for the benchmarks: each relays a client's frame to every client (a room)."""
