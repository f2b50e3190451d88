"""Training, evaluation and model cards for XNET's classifiers (backend-agnostic Keras 3)."""
