"""nlp_distill.training"""
