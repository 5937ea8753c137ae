"""The Hoomi server: transport, sessions, storage, fan-out, auth and settings."""
