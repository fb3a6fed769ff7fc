"""A minimal duck-typed logistic ranker for Hybrid tests while LogisticCTR is not on main.

Trained with scipy's L-BFGS on fastrec.logistic_loss_grad (the public kernel): enough to test
Hybrid's plumbing, not a substitute for fastrec.models.LogisticCTR.
"""

import numpy as np
from scipy.optimize import minimize

import fastrec


class TinyLogistic:
    def __init__(self, l2=1e-4):
        self.l2 = l2

    def get_params(self):
        return {"l2": self.l2}

    def fit(self, X, y, sample_weight=None):
        d = X.shape[1]

        def f(theta):
            loss, gw, gb = fastrec.logistic_loss_grad(X, y, theta[:d], theta[d], l2=self.l2)
            return loss, np.r_[gw, gb]

        res = minimize(f, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": 200})
        self.coef_, self.intercept_ = res.x[:d], np.array([res.x[d]])
        return self

    def predict_proba(self, X):
        return fastrec.sigmoid_scores(X, self.coef_, float(self.intercept_[0]))


def make_ranker(backend="auto"):
    """fastrec.models.LogisticCTR when it is installed, else the test ranker above."""
    try:
        from fastrec.models.logistic import LogisticCTR
    except ImportError:
        return TinyLogistic()
    return LogisticCTR(C=1.0, backend=backend)
