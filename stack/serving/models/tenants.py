"""The /predict model store: one small scikit-learn model per tenant, trained on seeded synthetic data.

Each tenant gets a different estimator and task, so multiplexing serves genuinely different
models. Files are `<store>/<tenant>.joblib`; the tenant id is the multiplexed model id.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

N_FEATURES = 8
TENANTS = {
    "acme": "logistic",
    "globex": "forest",
    "initech": "ridge",
    "umbrella": "boosting",
    "hooli": "knn",
    "stark": "logistic",
}


def _estimator(kind: str, seed: int):
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neighbors import KNeighborsClassifier

    return {
        "logistic": lambda: LogisticRegression(max_iter=500, random_state=seed),
        "forest": lambda: RandomForestClassifier(n_estimators=20, max_depth=5, random_state=seed),
        "ridge": lambda: Ridge(alpha=1.0),
        "boosting": lambda: GradientBoostingClassifier(n_estimators=20, random_state=seed),
        "knn": lambda: KNeighborsClassifier(n_neighbors=5),
    }[kind]()


def build(store: Path) -> None:
    import joblib
    import numpy as np

    store.mkdir(parents=True, exist_ok=True)
    for seed, (tenant, kind) in enumerate(sorted(TENANTS.items())):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(400, N_FEATURES))
        weights = rng.normal(size=N_FEATURES)
        score = x @ weights + 0.1 * rng.normal(size=400)
        y = score if kind == "ridge" else (score > 0).astype(int)
        model = _estimator(kind, seed).fit(x, y)
        joblib.dump(model, store / f"{tenant}.joblib")
    (store / "index.json").write_text(json.dumps({"n_features": N_FEATURES, "tenants": TENANTS}) + "\n")


def is_built(store: Path) -> bool:
    return (store / "index.json").exists() and all((store / f"{t}.joblib").exists() for t in TENANTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("store", type=Path)
    args = parser.parse_args()
    build(args.store)
    print(f"wrote {len(TENANTS)} tenant models to {args.store}")


if __name__ == "__main__":
    main()
