"""Tailor's shared service runtime."""
