"""The tailor command."""
