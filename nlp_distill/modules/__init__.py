"""nlp_distill.modules"""
