"""The /classify model: a logistic-regression sentiment head on MiniLM embeddings.

Trained at setup on the labelled sentences below, so the classifier is a real model with a
real decision boundary, and small enough to train in seconds on a CPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LABELS = ("negative", "positive")
# Short service-review sentences, the kind of text an ops team classifies.
TRAINING = {
    "positive": [
        "The deployment went smoothly and latency dropped.",
        "Great support, they fixed my issue within minutes.",
        "I love how fast the new model responds.",
        "Everything works perfectly after the upgrade.",
        "The dashboard is clear and genuinely helpful.",
        "Fantastic throughput, the team is thrilled.",
        "This release is stable and a pleasure to use.",
        "Very happy with the reliability this month.",
        "The rollout was painless and nobody got paged.",
        "Excellent documentation, setup took five minutes.",
        "Responses are accurate and quick, well done.",
        "The service has been rock solid all week.",
        "Wonderful experience, I would recommend it to anyone.",
        "Our costs went down and quality went up.",
        "Impressive performance under heavy load.",
        "The on-call shift was quiet and pleasant.",
        "Brilliant work, the bug is finally gone.",
        "I am delighted with the new autoscaling.",
        "Smooth, fast and friendly, exactly what we needed.",
        "The answers were helpful and the tone was kind.",
    ],
    "negative": [
        "The deployment failed and latency doubled.",
        "Terrible support, nobody answered for days.",
        "I hate how slow the new model responds.",
        "Everything broke after the upgrade.",
        "The dashboard is confusing and useless.",
        "Awful throughput, the team is frustrated.",
        "This release is unstable and painful to use.",
        "Very unhappy with the outages this month.",
        "The rollout was a disaster and everyone got paged.",
        "Poor documentation, setup took all day.",
        "Responses are wrong and slow, very disappointing.",
        "The service kept crashing all week.",
        "Horrible experience, I would not recommend it to anyone.",
        "Our costs went up and quality went down.",
        "Dreadful performance under heavy load.",
        "The on-call shift was a nightmare of alerts.",
        "Sloppy work, the bug is still there.",
        "I am furious about the broken autoscaling.",
        "Slow, buggy and rude, the opposite of what we needed.",
        "The answers were useless and the tone was rude.",
    ],
}


def train(out: Path) -> dict[str, float]:
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from stack.serving.models.minilm import MiniLM

    texts = [t for label in LABELS for t in TRAINING[label]]
    y = [i for i, label in enumerate(LABELS) for _ in TRAINING[label]]
    x = MiniLM().encode(texts).vectors
    head = LogisticRegression(C=10.0, max_iter=1000, random_state=0)
    cv_accuracy = float(cross_val_score(head, x, y, cv=5).mean())
    head.fit(x, y)
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(head, out / "head.joblib")
    meta = {"labels": list(LABELS), "cv_accuracy": round(cv_accuracy, 3), "examples": len(texts)}
    (out / "meta.json").write_text(json.dumps(meta) + "\n")
    return meta


def is_built(out: Path) -> bool:
    return (out / "head.joblib").exists() and (out / "meta.json").exists()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(f"trained sentiment head at {args.out}: {train(args.out)}")


if __name__ == "__main__":
    main()
