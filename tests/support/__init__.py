"""Shared test support: free ports, real Mosquitto and PostgreSQL servers, models, keys."""
