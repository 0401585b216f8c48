"""nlp_distill.data"""
