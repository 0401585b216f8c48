"""nlp_distill.models"""
