"""Renderers: text tables, JSON and plots. The only place numbers become strings."""
