"""Recommender models on the public kernel API (scikit-learn conventions: fit returns self)."""
from .hybrid import Hybrid
from .knn import ItemKNN, UserKNN
from .popularity import Popularity

__all__ = ["Hybrid", "ItemKNN", "Popularity", "UserKNN"]
