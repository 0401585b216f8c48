"""Bridges to other libraries, each imported only by that library (e.g. ``integrations.spacy``
through spaCy's ``spacy_factories`` entry point); ``import nlp_distill`` never loads them."""
