"""Recommender models on the public kernel API (scikit-learn conventions: fit returns self)."""
from .logistic import ConvergenceWarning, LogisticCTR

__all__ = ["ConvergenceWarning", "LogisticCTR"]
