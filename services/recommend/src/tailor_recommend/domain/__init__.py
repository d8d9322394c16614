"""The recommend service's models and rules: plain Python and numpy, no I/O, no transport."""
