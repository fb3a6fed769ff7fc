"""Recommender models on the public kernel API (scikit-learn conventions: fit returns self)."""

from .als import ALS
from .hybrid import Hybrid
from .knn import ItemKNN, UserKNN
from .logistic import ConvergenceWarning, LogisticCTR
from .popularity import Popularity

__all__ = ["ALS", "ConvergenceWarning", "Hybrid", "ItemKNN", "LogisticCTR", "Popularity", "UserKNN"]
