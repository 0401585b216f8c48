"""Orchestrations (training/inference runs) and the click CLI over the nlp_distill library."""
