"""Helpers shared by the cogs: checks, formatting, views."""
