"""nlp_distill.distill"""
