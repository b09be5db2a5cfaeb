"""Analyses behind the paper's two figures: attention cost vs tokens, and context-score maps."""
