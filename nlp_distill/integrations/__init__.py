"""Bridges to other libraries: ``integrations.spacy`` is imported only by spaCy (its
``spacy_factories`` entry point); ``integrations.tracking`` by the training loop, and it imports
TensorBoard, MLflow or W&B only when ``report_to`` names them. ``import nlp_distill`` loads neither."""
