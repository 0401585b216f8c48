"""Engines that run library work on many processes or machines through their own APIs (Ray)."""
