"""Modules that fail, each in one way an import string can fail."""
