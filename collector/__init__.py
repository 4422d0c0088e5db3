"""Collector configs and the builder manifest, shipped as package data."""
