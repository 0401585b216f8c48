"""Evidence: k-fold cross-validation of training recipes, pooled scores and paired intervals."""
