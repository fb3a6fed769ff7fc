"""Recommender models on the public kernel API (scikit-learn conventions: fit returns self)."""
